"""Figures for a paper (PNG and SVG, labelled axes, the Okabe-Ito colour-blind-safe palette).

* ``map_<method>``: the explorer's map of every head under one method (coordinates: see
  :mod:`attendome.explore.site`), colour = atlas type, marker = model, hollow = control.
* ``depth_share``: per head type, the share of each model's heads of that type (label in
  ``leaderboard.positive_labels``) against relative depth ``layer / (n_layers - 1)``, all models
  on one axis (depth in five equal bins; a model with fewer layers than bins leaves a bin empty).
* ``predictor_curves``: the universal encoder's validation KL per epoch per replicate
  (``data/embed/curves.csv``), the chosen epoch marked; beside it the ablation rows and the learning
  curve of the predictor when ``reports/ablation/`` holds them (written by
  ``experiments/ablation.py``, not by the pipeline).
* ``correspondence``: cosine similarity between every head of two models under the universal
  embedding (the leaderboard's preprocessing), heads in (layer, head) order, layer boundaries drawn.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from attendome.board.metrics import cosine_matrix
from attendome.board.run import fit_transform
from attendome.core.io import atomic_path, read_parquet
from attendome.core.params import Params

__all__ = ["OKABE_ITO", "paper_figures"]

# Okabe & Ito (2008), "Color Universal Design": distinguishable under the common colour-vision deficiencies
OKABE_ITO = ["#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7", "#000000"]
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]
UNTYPED = "#BBBBBB"


def _save(fig, path: Path) -> list[str]:
    import matplotlib.pyplot as plt

    names = []
    for ext in ("png", "svg"):
        p = path.with_suffix(f".{ext}")
        with atomic_path(p) as tmp:
            fig.savefig(tmp, dpi=150, format=ext, bbox_inches="tight", metadata={"Date": None} if ext == "svg"
                        else {"Software": None})
        names.append(p.name)
    plt.close(fig)
    return names


def type_colours(types: list[str]) -> dict[str, str]:
    """A fixed colour per head type (``untyped`` and ``control`` grey)."""
    real = [t for t in types if t not in ("untyped", "control")]
    out = {t: OKABE_ITO[i % len(OKABE_ITO)] for i, t in enumerate(sorted(real))}
    out.update(untyped=UNTYPED, control=UNTYPED)
    return out


def _map(meta: pd.DataFrame, xy: np.ndarray, method: str, colours: dict[str, str], path: Path) -> list[str]:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 5.2))
    models = list(dict.fromkeys(meta.model))
    order = sorted(set(meta.primary), key=lambda t: (t in ("untyped", "control"), t))
    for mi, m in enumerate(models):
        for t in reversed(order):  # typed heads drawn last, on top
            sel = ((meta.model == m) & (meta.primary == t)).to_numpy()
            if not sel.any():
                continue
            hollow = bool(meta.control[sel].iloc[0])
            ax.scatter(xy[sel, 0], xy[sel, 1], s=14 if t in ("untyped", "control") else 26,
                       marker=MARKERS[mi % len(MARKERS)], facecolors="none" if hollow else colours[t],
                       edgecolors=colours[t], linewidths=0.8, alpha=0.85)
    from matplotlib.lines import Line2D

    h_types = [Line2D([], [], marker="o", ls="", color=colours[t], label=t) for t in order]
    h_models = [Line2D([], [], marker=MARKERS[i % len(MARKERS)], ls="", color="#444444",
                       markerfacecolor="none" if meta[meta.model == m].control.iloc[0] else "#444444", label=m)
                for i, m in enumerate(models)]
    first = ax.legend(handles=h_types, title="atlas type", fontsize=7, title_fontsize=8, loc="upper left",
                      bbox_to_anchor=(1.01, 1.0), frameon=False)
    ax.add_artist(first)
    ax.legend(handles=h_models, title="model (hollow: control)", fontsize=7, title_fontsize=8, loc="lower left",
              bbox_to_anchor=(1.01, 0.0), frameon=False)
    ax.set_xlabel("principal component 1")
    ax.set_ylabel("principal component 2")
    ax.set_title(f"every head of every model: {method} embedding", fontsize=10)
    return _save(fig, path)


def _depth_share(meta: pd.DataFrame, positive, colours: dict[str, str], path: Path, bins: int = 5) -> list[str]:
    import matplotlib.pyplot as plt

    types = sorted(c[len("label_"):] for c in meta.columns if c.startswith("label_"))
    real = meta[~meta.control]
    models = list(dict.fromkeys(real.model))
    cols = min(4, len(types))
    rows = int(np.ceil(len(types) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows), squeeze=False, sharey=False)
    edges = np.linspace(0, 1, bins + 1)
    centres = (edges[:-1] + edges[1:]) / 2
    for ax, t in zip(axes.flat, types):
        for i, m in enumerate(models):
            g = real[real.model == m]
            depth = g.layer / max(g.layer.max(), 1)
            b = np.clip(np.digitize(depth, edges[1:-1]), 0, bins - 1)
            pos = g[f"label_{t}"].isin(positive).to_numpy()
            share = [pos[b == k].mean() if (b == k).any() else np.nan for k in range(bins)]
            ax.plot(centres, share, marker=MARKERS[i % len(MARKERS)], color=OKABE_ITO[i % len(OKABE_ITO)],
                    label=m, lw=1.2, ms=4)
        ax.set_title(t, fontsize=9, color="black")
        ax.set_xlim(0, 1)
        ax.set_xlabel("relative depth (layer / last layer)", fontsize=8)
        ax.set_ylabel("share of heads of that type", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(types):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7, frameon=False)
    fig.suptitle("where each head type lives: share of heads per depth bin", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def _curves(root: Path, path: Path) -> list[str]:
    import matplotlib.pyplot as plt

    curves = pd.read_csv(root / "data/embed/curves.csv")
    ablation = root / "reports/ablation/ablation.csv"
    learning = root / "reports/ablation/learning_curve.csv"
    panels = 1 + ablation.exists() + learning.exists()
    fig, axes = plt.subplots(1, panels, figsize=(4.4 * panels, 3.4), squeeze=False)
    ax = axes[0, 0]
    for r, c in enumerate(sorted(c for c in curves.columns if c.startswith("val_kl_"))):
        v = curves[c]
        if v.notna().any():
            ax.plot(curves.epoch, v, color=OKABE_ITO[r % len(OKABE_ITO)], label=f"replicate {r}")
            best = int(v.idxmin())
            ax.plot([curves.epoch[best]], [v[best]], marker="o", color=OKABE_ITO[r % len(OKABE_ITO)])
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation KL (nats per row)")
    ax.set_title("universal encoder: validation curve (dot: chosen epoch)", fontsize=9)
    ax.legend(fontsize=7, frameon=False)
    k = 1
    if ablation.exists():
        a = pd.read_csv(ablation)  # long: model, row, heldout_kl, ratio, ...
        ax = axes[0, k]
        k += 1
        rows = list(dict.fromkeys(a["row"]))
        for i, (m, g) in enumerate(a.groupby("model", sort=False)):
            g = g.set_index("row").reindex(rows)
            ax.plot(range(len(rows)), g["ratio"], marker=MARKERS[i % len(MARKERS)],
                    color=OKABE_ITO[i % len(OKABE_ITO)], label=m, lw=1)
        ax.axhline(1.0, color="#666666", lw=0.6, ls="--")
        ax.set_xticks(range(len(rows)))
        ax.set_xticklabels(rows, rotation=35, ha="right", fontsize=6)
        ax.set_ylabel("held-out KL / positional KL")
        ax.set_title("ablation (one switch per row; dashed: positional)", fontsize=9)
        ax.legend(fontsize=6, frameon=False)
    if learning.exists():
        lc = pd.read_csv(learning)  # long: model, n_train_prompts, heldout_kl, ratio, ...
        ax = axes[0, k]
        for i, (m, g) in enumerate(lc.groupby("model", sort=False)):
            ax.plot(g["n_train_prompts"], g["ratio"], marker=MARKERS[i % len(MARKERS)],
                    color=OKABE_ITO[i % len(OKABE_ITO)], label=m)
        ax.set_xscale("log")
        ax.set_xlabel("training prompts")
        ax.set_ylabel("held-out KL / positional KL")
        ax.set_title("learning curve of the cloners", fontsize=9)
        ax.legend(fontsize=6, frameon=False)
    fig.tight_layout()
    return _save(fig, path)


def _correspondence(params: Params, meta: pd.DataFrame, pair: tuple[str, str], root: Path, path: Path) -> list[str]:
    import matplotlib.pyplot as plt

    table = read_parquet(root / "data/embeddings/universal.parquet")
    t = meta[["model", "layer", "head"]].merge(table[table.seed == table.seed.min()], on=["model", "layer", "head"],
                                              how="left")
    cols = [c for c in t.columns if c.startswith("e_")]
    real = ~meta.control.to_numpy()
    X = fit_transform(t[cols].to_numpy(dtype=float), real, meta.model.to_numpy(), params.embed.dim,
                      params.leaderboard.centering)
    a, b = (meta.model == pair[0]).to_numpy(), (meta.model == pair[1]).to_numpy()
    C = cosine_matrix(np.vstack([X[a], X[b]]))[: a.sum(), a.sum():]  # (H_a, H_b)
    fig, ax = plt.subplots(figsize=(6.4, 5.6))
    im = ax.imshow(C, cmap="cividis", vmin=-1, vmax=1, aspect="auto", interpolation="nearest")
    for axis, sel in ((ax.axhline, a), (ax.axvline, b)):
        layers = meta.layer.to_numpy()[sel]
        for i in np.flatnonzero(np.diff(layers)) + 0.5:
            axis(i, color="white", lw=0.3)
    ax.set_ylabel(f"{pair[0]} heads (layer-major)")
    ax.set_xlabel(f"{pair[1]} heads (layer-major)")
    ax.set_title("cosine similarity of universal embeddings (white lines: layer boundaries)", fontsize=9)
    fig.colorbar(im, ax=ax, label="cosine similarity")
    return _save(fig, path)


def paper_figures(params: Params, meta: pd.DataFrame, coords: dict[str, np.ndarray], root: str | Path,
                  outdir: str | Path) -> list[str]:
    """Write every figure of the module docstring into ``outdir``; returns the file names."""
    import matplotlib

    matplotlib.use("Agg")
    matplotlib.rcParams["svg.hashsalt"] = "attendome"  # SVG ids from a fixed salt: the same bytes every run
    root, outdir = Path(root), Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    colours = type_colours(sorted(set(meta.primary)))
    names = []
    for method, xy in coords.items():
        names += _map(meta, xy, method, colours, outdir / f"map_{method}")
    names += _depth_share(meta, params.leaderboard.positive_labels, colours, outdir / "depth_share")
    names += _curves(root, outdir / "predictor_curves")
    real = [m for m in params.models if not params.is_control(m)]
    pair = params.explore.pair or (tuple(real[:2]) if len(real) >= 2 else None)
    if pair and "universal" in coords:
        names += _correspondence(params, meta, pair, root, outdir / "correspondence")
    return names
