"""DVC stage `heads@<key>`: score every head of one model; write its table and metrics."""

from attendome.atlas.summary import label_scores, model_summary
from attendome.atlas.score import score_model
from attendome.core.io import write_json, write_parquet
from attendome.core.models import load_model
from attendome.stage import stage_args


def main() -> None:
    params, key = stage_args(__doc__, per_model=True, scorers=True)
    lm = load_model(key, params)
    try:
        table = score_model(lm, params.heads)
    finally:
        lm.release()
    write_parquet(table, f"data/heads/{key}.parquet")
    summary = model_summary(label_scores(table, params.atlas.thresholds), params.atlas.top_k)
    write_json(summary, f"metrics/heads/{key}.json")


if __name__ == "__main__":
    main()
