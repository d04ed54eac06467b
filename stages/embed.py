"""DVC stage `embed`: the universal head encoder across all models (tracked in MLflow)."""

import argparse

from attendome.params import load_params
from attendome.phase2 import run_embed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    run_embed(load_params(ap.parse_args().params))


if __name__ == "__main__":
    main()
