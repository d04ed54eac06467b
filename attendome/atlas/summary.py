"""The head atlas: labels, distributions, rankings and heatmaps over all models.

Labels use per-head-type thresholds from ``params.yaml``: ``high`` if value >= high, ``medium`` if
value >= medium, else ``low``; an undefined (NaN) score is labelled ``n/a``. For scores where lower
is "more" of the head type (none so far) the comparison would flip; the registry says which.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from attendome.atlas import scorers as S
from attendome.core.io import atomic_path
from attendome.core.params import Threshold

__all__ = ["LABELS", "label_scores", "counts_by_label", "top_heads", "percentiles", "model_summary",
           "atlas_summary", "model_headline", "plot_heatmaps"]

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


OVERLAP_PAIRS = (("induction", "retrieval"), ("induction", "retrieval_tf"), ("induction", "copying"),
                 ("induction", "copying_ov"))


def overlap(labelled: pd.DataFrame, a: str, b: str, k: int) -> dict | None:
    """How much two head types coincide in one model.

    Returns:
        ``{"k", "top_k_intersection", "top_k_jaccard", "spearman"}``: the size and Jaccard index
        ([0, 1], higher = more shared) of the two top-k head sets, and the Spearman rank correlation
        ([-1, 1]) of the two scores over all heads; None when either score is undefined.
    """
    wide = labelled.pivot_table(index=["layer", "head"], columns="score_name", values="value")
    if a not in wide or b not in wide or wide[a].isna().all() or wide[b].isna().all():
        return None
    ta = set(wide[a].dropna().nlargest(k).index)
    tb = set(wide[b].dropna().nlargest(k).index)
    both = wide[[a, b]].dropna()
    rho = float(both[a].rank().corr(both[b].rank())) if len(both) > 2 else float("nan")
    return {"k": k, "top_k_intersection": len(ta & tb), "top_k_jaccard": round(len(ta & tb) / len(ta | tb), 4),
            "spearman": round(rho, 4)}


def atlas_summary(atlas: pd.DataFrame, k: int, pcts: Sequence[float]) -> dict:
    """Summary of the whole atlas, per model (``data/atlas_summary.json``), with head-type overlaps."""
    out = {}
    for m, g in atlas.groupby("model", sort=True):
        summ = model_summary(g, k, pcts)
        ov = {f"{a}~{b}": o for a, b in OVERLAP_PAIRS if (o := overlap(g, a, b, k)) is not None}
        if ov:
            summ["overlap"] = ov
        out[m] = summ
    return {"models": out}


def model_headline(labelled: pd.DataFrame, positive: Sequence[str] = ("high", "medium")) -> dict:
    """The numbers of one model worth comparing across runs (``metrics/heads/<model>.json``): per
    head type, the number of heads labelled ``positive`` (types undefined for the model are left out).
    Flat keys named after the types, so ``dvc metrics show`` stacks models as rows of one small table."""
    out = {}
    for name, g in labelled.groupby("score_name", sort=True):
        if not g["value"].isna().all():
            out[name] = int(g["label"].isin(list(positive)).sum())
    return out


def plot_heatmaps(atlas: pd.DataFrame, outdir: str | Path) -> list[Path]:
    """One PNG per model and head type: layers (rows) x heads (columns), value as colour.

    Returns:
        Paths written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    written = []
    for (model, name), g in atlas.groupby(["model", "score_name"], sort=True):
        grid = g.pivot(index="layer", columns="head", values="value").sort_index()
        lo, hi = S.get(name).value_range if name in S.REGISTRY else (-np.inf, np.inf)
        if not (np.isfinite(lo) and np.isfinite(hi)):  # unbounded score (copying z): symmetric scale
            m = float(np.nanmax(np.abs(grid.to_numpy(dtype=float)))) if grid.notna().any().any() else 1.0
            lo, hi = -m, m
        fig, ax = plt.subplots(figsize=(max(4, 0.35 * grid.shape[1] + 2), max(3, 0.22 * grid.shape[0] + 1.5)))
        cmap = "RdBu_r" if lo < 0 else "viridis"
        im = ax.imshow(grid.to_numpy(dtype=float), aspect="auto", cmap=cmap, vmin=lo, vmax=hi,
                       interpolation="nearest")
        ax.set_xlabel("head")
        ax.set_ylabel("layer")
        ax.set_xticks(range(grid.shape[1]))
        ax.set_title(f"{model}: {name}" + (" (undefined)" if grid.isna().all().all() else ""), fontsize=9)
        fig.colorbar(im, ax=ax, fraction=0.05)
        fig.tight_layout()
        path = outdir / f"{model}__{name}.png"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=90, format="png")
        plt.close(fig)
        written.append(path)
    return written
