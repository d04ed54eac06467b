"""DVC stage `leaderboard`: score every embedding method; outliers; plots."""

import argparse

from attendome.params import load_params
from attendome.phase2 import run_leaderboard


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    run_leaderboard(load_params(ap.parse_args().params))


if __name__ == "__main__":
    main()
