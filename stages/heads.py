"""DVC stage `heads@<key>`: score every head of one model; write its table and metrics."""

from attendome.atlas.labels import label_scores, model_headline, model_summary
from attendome.atlas.score import score_model
from attendome.atlas.scorers import check_params
from attendome.core.io import write_json, write_parquet
from attendome.core.models import check_params_against_config, load_model
from attendome.stage import run_stage, say, stage_args


def main() -> None:
    params, key = stage_args(__doc__, per_model=True, check=check_params)
    check_params_against_config(key, params, heads=True)
    lm = load_model(key, params)
    try:
        table = score_model(lm, params.heads)
    finally:
        lm.release()
    write_parquet(table, f"data/heads/{key}.parquet")
    labelled = label_scores(table, params.atlas.thresholds)
    write_json(model_summary(labelled, params.atlas.top_k), f"data/heads/{key}.json")
    head = model_headline(labelled, params.leaderboard.positive_labels)
    write_json(head, f"metrics/heads/{key}.json")
    say(f"heads@{key}: {len(table) // len(params.heads.scorers)} heads x {len(params.heads.scorers)} scorers "
        f"-> data/heads/{key}.parquet; positives {head}")


if __name__ == "__main__":
    run_stage(main)
