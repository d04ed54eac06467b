"""DVC stage `explore`: the head explorer (a static site that opens offline) and the paper figures."""

from attendome.explore.site import build_explorer, check_params
from attendome.stage import run_stage, say, stage_args


def main() -> None:
    params, _ = stage_args(__doc__, check=check_params)
    s = build_explorer(params)
    say(f"explorer: {s['heads']} heads of {s['models']} models, maps {s['methods']}, {len(s['figures'])} "
        "figure files -> reports/explorer/index.html (opens from disk, no network)")


if __name__ == "__main__":
    run_stage(main)
