"""DVC stage `leaderboard`: score every embedding method; outliers; correspondence; plots."""

from attendome.board.run import run_leaderboard
from attendome.stage import run_stage, say, stage_args


def main() -> None:
    params, _ = stage_args(__doc__)
    board = run_leaderboard(params)
    best = {}
    for t in board["types"]:
        maps = {m: per[t]["all"]["map"]["mean"] for m, per in board["methods"].items() if per[t].get("all")}
        if maps:
            best[t] = max(maps, key=maps.get)
    say(f"leaderboard: types {board['types']}; best mAP per type {best} -> metrics/leaderboard.json")


if __name__ == "__main__":
    run_stage(main)
