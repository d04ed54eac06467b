"""DVC stage `baselines`: random, score-vector, RSA and cloner baseline embeddings."""

from attendome.space.methods import run_baselines
from attendome.stage import run_stage, say, stage_args


def main() -> None:
    params, _ = stage_args(__doc__)
    sizes = run_baselines(params)
    say("baselines: " + ", ".join(f"{k} {n} rows x {d} dims" for k, (n, d) in sizes.items()) + " -> data/embeddings")


if __name__ == "__main__":
    run_stage(main)
