"""DVC stage `embed`: the universal head encoder across all models (tracked in MLflow)."""

from attendome.space.embed import run_embed
from attendome.stage import run_stage, say, stage_args


def main() -> None:
    params, _ = stage_args(__doc__)
    h = run_embed(params)
    ratios = {k: v["ratio_to_positional"] for k, v in h["models"].items()}
    say(f"embed: {len(h['models'])} models x {h['n_seeds']} seeds, dim {h['dim']}; held-out KL / positional {ratios}"
        + (f"; transfer {h['transfer']['model']} KL {h['transfer']['heldout_kl']}" if "transfer" in h else ""))


if __name__ == "__main__":
    run_stage(main)
