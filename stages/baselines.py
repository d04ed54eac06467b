"""DVC stage `baselines`: random, score-vector, RSA and cloner baseline embeddings."""

import argparse

from attendome.params import load_params
from attendome.phase2 import run_baselines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    run_baselines(load_params(ap.parse_args().params))


if __name__ == "__main__":
    main()
