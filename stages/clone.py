"""DVC stage `clone@<key>`: train and evaluate the batched cloner of one model (tracked in MLflow)."""

from attendome.clone.run import run_clone
from attendome.stage import stage_args


def main() -> None:
    params, key = stage_args(__doc__, per_model=True)
    run_clone(key, params)


if __name__ == "__main__":
    main()
