"""The head atlas over all models (stage ``atlas``): overlaps between head types, the atlas summary
and per-model heatmaps. Labels themselves are :mod:`attendome.atlas.labels`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from attendome.atlas import scorers as S
from attendome.atlas.labels import model_summary
from attendome.core.io import atomic_path

__all__ = ["OVERLAP_PAIRS", "RETRIEVAL_PAPER", "overlap", "retrieval_share", "atlas_summary", "plot_heatmaps"]


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


# Wu et al. 2024 call a head a retrieval head at score >= 0.1 and find "less than 5 %" of heads there;
# the authors' released scores give 2.1-6.2 % per model (the band the atlas reports a model against).
RETRIEVAL_PAPER = {"threshold": 0.1, "band": (0.021, 0.062)}


def retrieval_share(g: pd.DataFrame) -> dict:
    """Per retrieval score of one model: the share of heads (with a defined score) at or above the paper's
    threshold, beside the paper's band; ``in_band`` False above or below it."""
    out = {}
    lo, hi = RETRIEVAL_PAPER["band"]
    for name in ("retrieval", "retrieval_tf"):
        v = g.loc[g["score_name"] == name, "value"].dropna().to_numpy()
        if len(v):
            share = float(np.mean(v >= RETRIEVAL_PAPER["threshold"]))
            out[name] = {"share_at_or_above_0.1": round(share, 4), "paper_band": [lo, hi],
                         "in_band": bool(lo <= share <= hi)}
    return out


def atlas_summary(atlas: pd.DataFrame, k: int, pcts: Sequence[float], thresholds: Mapping | None = None) -> dict:
    """Summary of the whole atlas, per model (``data/atlas_summary.json``), with head-type overlaps, the
    share of retrieval heads beside the paper's band and (given ``thresholds``) the labelling rule of
    every type."""
    out = {}
    for m, g in atlas.groupby("model", sort=True):
        summ = model_summary(g, k, pcts)
        ov = {f"{a}~{b}": o for a, b in OVERLAP_PAIRS if (o := overlap(g, a, b, k)) is not None}
        if ov:
            summ["overlap"] = ov
        if share := retrieval_share(g):
            summ["retrieval_share"] = share
        out[m] = summ
    res: dict = {"models": out}
    if thresholds is not None:
        res["label_rules"] = {name: t.rule for name, t in sorted(thresholds.items())}
    return res


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
