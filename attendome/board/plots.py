"""Leaderboard figures (PNG, written atomically).

* ``map_by_type.png``: mAP of every method per head type, with the two-level bootstrap 95 % CI as
  error bars and the exact chance level as a black tick.
* ``retrieval_at_k.png``: precision@k and recall@k against k, per head type, with chance.
* ``reconstruction.png``: held-out KL per model of the universal encoder and the cloners (error bars:
  spread over replicates) beside the positional and uniform baselines.
* ``outliers.png``: per model, each head's log KL ratio to its positional pattern; flagged heads red.
* ``embeddings_pca.png``: the universal embeddings (replicate 0), first two principal components,
  coloured by atlas head type and by model.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from attendome.board.records import Board
from attendome.core.io import atomic_path
from attendome.core.params import Params

__all__ = ["leaderboard_plots"]


def _save(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)


def _primary_type(meta: pd.DataFrame, positive) -> np.ndarray:
    order = ["induction", "retrieval", "retrieval_tf", "duplicate_token", "previous_token", "copying", "copying_ov"]
    cols = [f"label_{t}" for t in order if f"label_{t}" in meta] + \
           [c for c in meta.columns if c.startswith("label_") and c[6:] not in order]
    out = np.array(["untyped"] * len(meta), dtype=object)
    for c in reversed(cols):
        out[meta[c].isin(positive).to_numpy()] = c[len("label_"):]
    out[meta.control.to_numpy()] = "control"
    return out


def leaderboard_plots(params: Params, board: Board, universal: pd.DataFrame, meta: pd.DataFrame, errors: pd.DataFrame,
                      clone: pd.DataFrame, outliers: pd.DataFrame, outdir: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from attendome.core.linalg import pca

    outdir = Path(outdir)
    types = board["types"]
    methods = list(board["methods"])
    ks = list(params.leaderboard.ks)

    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(types) + 2), 4.2))
    w = 0.8 / max(1, len(methods))
    for i, m in enumerate(methods):
        vals, lo, hi, chance = [], [], [], []
        for t in types:
            e = board["methods"][m].get(t, {}).get("all", {}).get("map")
            v = e["mean"] if e else np.nan
            ci = e["ci95_by_model"] if e else [np.nan, np.nan]
            vals.append(v)
            lo.append(v - ci[0] if e and ci[0] is not None else 0)
            hi.append(ci[1] - v if e and ci[1] is not None else 0)
            chance.append(e["chance"] if e else np.nan)
        x = np.arange(len(types)) + i * w
        ax.bar(x, vals, width=w, yerr=[lo, hi], capsize=2, label=m)
        ax.scatter(x, chance, marker="_", color="k", s=60, zorder=3, label="chance" if i == 0 else None)
    ax.set_xticks(np.arange(len(types)) + 0.4 - w / 2)
    ax.set_xticklabels(types, fontsize=8)
    ax.set_ylabel("mAP, other models' heads (95% CI, by model)")
    ax.set_ylim(0, 1)
    ax.set_title("type retrieval across models", fontsize=9)
    ax.legend(fontsize=7, ncol=3)
    fig.tight_layout()
    _save(fig, outdir / "map_by_type.png")

    fig, axes = plt.subplots(2, max(1, len(types)), figsize=(3.2 * max(1, len(types)), 6), squeeze=False)
    for j, t in enumerate(types):
        for row, metric in enumerate(("precision", "recall")):
            ax = axes[row, j]
            for m in methods:
                e = board["methods"][m].get(t, {}).get("all")
                if e:
                    ax.plot(ks, [e[f"{metric}@{k}"]["mean"] for k in ks], marker="o", ms=3, label=m)
            e = board["methods"][methods[0]].get(t, {}).get("all")
            if e:
                ax.plot(ks, [e[f"{metric}@{k}"]["chance"] for k in ks], "k--", lw=1, label="chance")
            ax.set_xscale("log")
            ax.set_ylim(0, 1)
            ax.set_title(f"{t}: {metric}@k", fontsize=8)
            ax.set_xlabel("k", fontsize=7)
    axes[0, 0].legend(fontsize=6)
    fig.tight_layout()
    _save(fig, outdir / "retrieval_at_k.png")

    rec = board["reconstruction"]
    models = list(rec)
    fig, ax = plt.subplots(figsize=(max(6, 1.5 * len(models) + 2), 4))
    series = [("positional_kl", None, "positional"), ("cloner_kl", "cloner_kl_sd", "cloner"),
              ("universal_kl", "universal_kl_sd", "universal"), ("uniform_kl", None, "uniform")]
    w = 0.8 / len(series)
    for i, (k, sd, name) in enumerate(series):
        ax.bar(np.arange(len(models)) + i * w, [rec[m][k] for m in models], width=w,
               yerr=[rec[m][sd] or 0 for m in models] if sd else None, capsize=2, label=name)
    ax.set_xticks(np.arange(len(models)) + 0.4 - w / 2)
    ax.set_xticklabels(models, fontsize=7)
    ax.set_ylabel("held-out KL (lower is better)")
    ax.set_title("reconstruction on held-out prompts (error bars: sd over replicates)", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    _save(fig, outdir / "reconstruction.png")

    sub = errors[(errors.kind == "all") & (errors.metric == "kl") & errors.method.isin(["model", "positional"])]
    sub = sub.assign(method=sub.method.replace({"model": "predicted"}))  # 'model' is also a column
    wide = sub.pivot_table(
        index=["model", "layer", "head"], columns="method", values="value", aggfunc="mean"
    ).reset_index()
    fig, ax = plt.subplots(figsize=(max(6, 1.3 * wide.model.nunique() + 2), 4))
    flagged = set(map(tuple, outliers[outliers.method == "universal"][["model", "layer", "head"]].to_numpy()))
    for i, (m, g) in enumerate(wide.groupby("model", sort=False)):
        lr = np.log(g["predicted"] / g["positional"]).to_numpy()
        f = np.array([(m, a, b) in flagged for a, b in zip(g.layer, g["head"])])
        x = i + 0.25 * np.random.default_rng(0).uniform(-1, 1, len(lr))
        ax.scatter(x[~f], lr[~f], s=6, alpha=0.5, color="tab:blue")
        ax.scatter(x[f], lr[f], s=14, color="red", label="non-embeddable" if i == 0 else None)
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xticks(range(wide.model.nunique()))
    ax.set_xticklabels(list(dict.fromkeys(wide.model)), fontsize=7)
    ax.set_ylabel("log(KL universal / KL positional) per head")
    ax.set_title("outlier score (within-model robust z; flagged only if worse than positional)", fontsize=9)
    if flagged:
        ax.legend(fontsize=7)
    fig.tight_layout()
    _save(fig, outdir / "outliers.png")

    u = meta[["model", "layer", "head"]].merge(
        universal[universal.seed == universal.seed.min()], on=["model", "layer", "head"], how="left"
    )
    X = u[[c for c in u.columns if c.startswith("e_")]].to_numpy(dtype=float)
    P = pca(X, 2)
    t = _primary_type(meta, params.leaderboard.positive_labels)
    fig, axes = plt.subplots(1, 2, figsize=(12, 5))
    for ax, colour_by, values in ((axes[0], "head type", t), (axes[1], "model", meta.model.to_numpy())):
        for v in sorted(set(values), key=lambda x: (x in ("untyped", "control"), x)):
            m = values == v
            faint = v in ("untyped", "control")
            ax.scatter(P[m, 0], P[m, 1], s=8 if faint else 18, alpha=0.3 if faint else 0.85, label=f"{v} ({m.sum()})")
        ax.set_title(f"universal embeddings (PCA, replicate 0), coloured by {colour_by}", fontsize=9)
        ax.legend(fontsize=7, markerscale=1.5)
    fig.tight_layout()
    _save(fig, outdir / "embeddings_pca.png")
