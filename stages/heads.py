"""DVC stage `heads@<key>`: score every head of one model; write its table and metrics."""

import argparse

from attendome.atlas import label_scores, model_summary
from attendome.heads import score_model
from attendome.io import write_json, write_parquet
from attendome.models import load_model
from attendome.params import load_params


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("model", help="model key in params.yaml")
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args()
    params = load_params(args.params)  # validated before any model loads
    params.model(args.model)  # unknown key -> clear error listing the known ones
    lm = load_model(args.model, params)
    try:
        table = score_model(lm, params.heads)
    finally:
        lm.release()
    write_parquet(table, f"data/heads/{args.model}.parquet")
    summary = model_summary(label_scores(table, params.atlas.thresholds), params.atlas.top_k)
    write_json(summary, f"metrics/heads/{args.model}.json")


if __name__ == "__main__":
    main()
