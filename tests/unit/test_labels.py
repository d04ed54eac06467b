"""Unit tier: atlas labels from thresholds, with and without the top-percentile rule."""

import numpy as np
import pandas as pd

from attendome.atlas.labels import label_scores
from attendome.core.params import Threshold


def _table(values_by_model: dict[str, list[float]], name: str = "copying_ov") -> pd.DataFrame:
    rows = [dict(model=m, layer=0, head=h, score_name=name, value=v)
            for m, vals in values_by_model.items() for h, v in enumerate(vals)]
    return pd.DataFrame(rows)


def test_absolute_thresholds():
    df = label_scores(_table({"a": [0.95, 0.8, 0.1, np.nan]}), {"copying_ov": Threshold(high=0.9, medium=0.7)})
    assert list(df["label"]) == ["high", "medium", "low", "n/a"]


def test_top_fraction_keeps_only_each_models_top_heads():
    # model a: 10 defined heads, 8 above the absolute bar; top 20 % -> 2 heads stay positive
    a = [0.99, 0.98, 0.97, 0.96, 0.95, 0.94, 0.8, 0.75, 0.1, 0.0, np.nan]
    # model b: its best head is below the absolute bar: top-fraction never makes a head positive by itself
    b = [0.5, 0.4, 0.3, 0.2, 0.1]
    thr = {"copying_ov": Threshold(high=0.9, medium=0.7, top_fraction=0.2)}
    df = label_scores(_table({"a": a, "b": b}), thr)
    la = list(df[df.model == "a"]["label"])
    assert la[:2] == ["high", "high"] and set(la[2:10]) == {"low"} and la[10] == "n/a"
    assert set(df[df.model == "b"]["label"]) == {"low"}


def test_top_fraction_keeps_ties_at_the_cut():
    thr = {"copying_ov": Threshold(high=0.9, medium=0.7, top_fraction=0.25)}
    df = label_scores(_table({"a": [0.95, 0.95, 0.5, 0.5]}), thr)
    assert list(df["label"]) == ["high", "high", "low", "low"]
    df = label_scores(_table({"a": [0.95, 0.92, 0.92, 0.5]}), thr)
    assert list(df["label"]) == ["high", "low", "low", "low"]
