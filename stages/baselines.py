"""DVC stage `baselines`: random, score-vector, RSA and cloner baseline embeddings."""

from attendome.space.run import run_baselines
from attendome.stage import stage_args


def main() -> None:
    params, _ = stage_args(__doc__)
    run_baselines(params)


if __name__ == "__main__":
    main()
