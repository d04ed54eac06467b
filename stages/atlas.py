"""DVC stage `atlas`: combine all models' head tables, label them, summarise, plot."""

import pandas as pd

from attendome.atlas.labels import label_scores
from attendome.atlas.summary import atlas_summary, plot_heatmaps
from attendome.core.io import read_parquet, write_json, write_parquet
from attendome.stage import run_stage, say, stage_args
from attendome.atlas.scorers import check_params, validate_scores


def main() -> None:
    params, _ = stage_args(__doc__, check=check_params)
    tables = [validate_scores(read_parquet(f"data/heads/{key}.parquet")) for key in params.models]
    atlas = label_scores(pd.concat(tables, ignore_index=True), params.atlas.thresholds)
    write_parquet(atlas, "data/atlas.parquet")
    summary = atlas_summary(atlas, params.atlas.top_k, params.atlas.percentiles, params.atlas.thresholds)
    write_json(summary, "data/atlas_summary.json")
    pngs = plot_heatmaps(atlas, "plots/atlas")
    say(f"atlas: {len(params.models)} models, {len(atlas)} scores -> data/atlas.parquet, {len(pngs)} heatmaps")


if __name__ == "__main__":
    run_stage(main)
