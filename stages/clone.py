"""DVC stage `clone@<key>`: train and evaluate the batched cloner of one model (tracked in MLflow)."""

import argparse

from attendome.params import load_params
from attendome.phase1 import run_clone


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("model")
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args()
    params = load_params(args.params)
    params.model(args.model)
    run_clone(args.model, params)


if __name__ == "__main__":
    main()
