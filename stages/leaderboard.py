"""DVC stage `leaderboard`: score every embedding method; outliers; plots."""

from attendome.space.run import run_leaderboard
from attendome.stage import stage_args


def main() -> None:
    params, _ = stage_args(__doc__)
    run_leaderboard(params)


if __name__ == "__main__":
    main()
