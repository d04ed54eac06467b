"""DVC stage `atlas`: combine all models' head tables, label them, summarise, plot."""

import argparse

import pandas as pd

from attendome.atlas import atlas_summary, label_scores, plot_heatmaps
from attendome.io import read_parquet, write_json, write_parquet
from attendome.params import load_params
from attendome.tables import validate_scores


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args()
    params = load_params(args.params)
    tables = [validate_scores(read_parquet(f"data/heads/{key}.parquet")) for key in params.models]
    atlas = label_scores(pd.concat(tables, ignore_index=True), params.atlas.thresholds)
    write_parquet(atlas, "data/atlas.parquet")
    write_json(atlas_summary(atlas, params.atlas.top_k, params.atlas.percentiles), "metrics/atlas.json")
    plot_heatmaps(atlas, "plots/atlas")


if __name__ == "__main__":
    main()
