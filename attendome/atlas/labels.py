"""Labels of head scores (used by ``heads@<model>`` for its counts and by ``atlas`` for the whole atlas).

Labels use per-head-type thresholds from ``params.yaml``: ``high`` if value >= high, ``medium`` if
value >= medium, else ``low``; an undefined (NaN) score is labelled ``n/a``. A type with a
``top_fraction`` also uses a top-percentile rule: within each model, only the ``ceil(top_fraction * n)``
highest-scoring heads (n = heads with a defined score; ties at the cut all kept) can be high or
medium, so a score that real models put high on many heads (copying_ov: a third of all heads above
0.7) still names a head *type*. For scores where lower is "more" of the head type (none so far) the
comparison would flip; the registry says which.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from attendome.atlas import scorers as S
from attendome.core.params import Threshold

__all__ = ["LABELS", "label_scores", "counts_by_label", "top_heads", "percentiles", "model_summary",
           "model_headline"]

LABELS = ("high", "medium", "low", "n/a")


def label_scores(df: pd.DataFrame, thresholds: Mapping[str, Threshold]) -> pd.DataFrame:
    """Add a ``label`` column (high / medium / low / n/a) to a head-score table.

    Raises:
        KeyError: a score has no thresholds.
    """
    out = df.copy()
    labels = np.full(len(out), "n/a", dtype=object)
    for name in out["score_name"].unique():
        if name not in thresholds:
            raise KeyError(f"no thresholds for score {name!r} (atlas.thresholds in params.yaml)")
        t = thresholds[name]
        m = (out["score_name"] == name).to_numpy()
        v = out.loc[m, "value"].to_numpy(dtype=float)
        lab = np.where(v >= t.high, "high", np.where(v >= t.medium, "medium", "low")).astype(object)
        if t.top_fraction is not None:
            keys = out.loc[m, "model"].to_numpy() if "model" in out else np.zeros(len(v))
            for key in pd.unique(keys):
                k = keys == key
                defined = v[k][~np.isnan(v[k])]
                if len(defined):
                    n_top = int(np.ceil(t.top_fraction * len(defined)))
                    cut = np.sort(defined)[::-1][n_top - 1]  # the n_top-th highest value
                    idx = np.flatnonzero(k)
                    lab[idx[~(v[idx] >= cut)]] = "low"
        lab[np.isnan(v)] = "n/a"
        labels[m] = lab
    out["label"] = pd.Series(labels, index=out.index, dtype="string")
    return out


def counts_by_label(labelled: pd.DataFrame) -> dict:
    """``{score_name: {label: count}}`` for one model."""
    res = {}
    for name, g in labelled.groupby("score_name", sort=True):
        vc = g["label"].value_counts()
        res[name] = {lab: int(vc.get(lab, 0)) for lab in LABELS}
    return res


def top_heads(labelled: pd.DataFrame, k: int) -> dict:
    """``{score_name: [{layer, head, value, stderr, label}, ...]}`` best first (NaN dropped)."""
    res = {}
    for name, g in labelled.groupby("score_name", sort=True):
        asc = not S.get(name).higher_is_better if name in S.REGISTRY else False
        g = g.dropna(subset=["value"]).sort_values("value", ascending=asc).head(k)
        res[name] = [dict(layer=int(r.layer), head=int(r.head), value=round(float(r.value), 4),
                          stderr=None if pd.isna(r.stderr) else round(float(r.stderr), 4), label=str(r.label))
                     for r in g.itertuples()]
    return res


def percentiles(labelled: pd.DataFrame, pcts: Sequence[float]) -> dict:
    """``{score_name: {'p5': ..., ...}}`` over the defined values of one model."""
    res = {}
    for name, g in labelled.groupby("score_name", sort=True):
        v = g["value"].dropna().to_numpy()
        res[name] = {f"p{p:g}": (round(float(np.percentile(v, p)), 4) if len(v) else None) for p in pcts}
    return res


def model_summary(labelled: pd.DataFrame, k: int, pcts: Sequence[float] = ()) -> dict:
    """Metrics of one model: head counts per label, top-k heads, percentiles, NaN reasons."""
    reasons = (labelled[labelled["value"].isna()].groupby("score_name")["reason"].first().to_dict())
    out = {"n_heads": int(labelled[["layer", "head"]].drop_duplicates().shape[0]),
           "counts": counts_by_label(labelled), "top": top_heads(labelled, k)}
    if pcts:
        out["percentiles"] = percentiles(labelled, pcts)
    if reasons:
        out["undefined"] = {k_: str(v) for k_, v in reasons.items()}
    return out


def model_headline(labelled: pd.DataFrame, positive: Sequence[str] = ("high", "medium")) -> dict:
    """The numbers of one model worth comparing across runs (``metrics/heads/<model>.json``): per
    head type, the number of heads labelled ``positive`` (types undefined for the model are left out).
    Flat keys named after the types, so ``dvc metrics show`` stacks models as rows of one small table."""
    out = {}
    for name, g in labelled.groupby("score_name", sort=True):
        if not g["value"].isna().all():
            out[name] = int(g["label"].isin(list(positive)).sum())
    return out
