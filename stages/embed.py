"""DVC stage `embed`: the universal head encoder across all models (tracked in MLflow)."""

from attendome.space.run import run_embed
from attendome.stage import stage_args


def main() -> None:
    params, _ = stage_args(__doc__)
    run_embed(params)


if __name__ == "__main__":
    main()
