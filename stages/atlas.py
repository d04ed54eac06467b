"""DVC stage `atlas`: combine all models' head tables, label them, summarise, plot."""

import pandas as pd

from attendome.atlas.summary import atlas_summary, label_scores, plot_heatmaps
from attendome.core.io import read_parquet, write_json, write_parquet
from attendome.stage import stage_args
from attendome.atlas.scorers import validate_scores


def main() -> None:
    params, _ = stage_args(__doc__, scorers=True)
    tables = [validate_scores(read_parquet(f"data/heads/{key}.parquet")) for key in params.models]
    atlas = label_scores(pd.concat(tables, ignore_index=True), params.atlas.thresholds)
    write_parquet(atlas, "data/atlas.parquet")
    write_json(atlas_summary(atlas, params.atlas.top_k, params.atlas.percentiles), "metrics/atlas.json")
    plot_heatmaps(atlas, "plots/atlas")


if __name__ == "__main__":
    main()
