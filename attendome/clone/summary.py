"""Summaries and plots of held-out reconstruction (Phase 1 cloners and the Phase 2 encoder alike).

Input: the long per-head table of :func:`attendome.clone.model.evaluate_heads` with ``model,
layer, head, seed`` added. Every number is first averaged over a model's heads within one
replicate (seed); the headline gives the mean and the standard deviation of that average across
replicates. Baselines are deterministic, so they are read from replicate 0.

* ``heldout_kl``: mean row KL(true || predicted) on held-out prompts; >= 0, lower is better.
* ``ratio_to_positional``: ``heldout_kl / positional_kl``, where ``positional_kl`` is the KL of
  the head's own mean positional pattern (from training prompts); < 1 means the predictor beats
  the head's positional habit, lower is better. ``gain_over_positional = 1 - ratio``.
* ``beats_positional``: share of heads whose (replicate-mean) KL is below their positional KL.
* ``induction_mass`` / ``duplicate_mass``: on held-out repeat probes, the attention mass on the
  induction (duplicate) target, predicted vs true (and the positional baseline's), averaged over the
  heads labelled induction (duplicate_token) in the atlas. [0, 1]; the closer to ``true``, the
  better the predictor expresses the mechanism.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from attendome.core.io import atomic_path

__all__ = ["summarise_heads", "plot_training", "model_means"]

HEAD = ["model", "layer", "head"]


def _r(x, n: int = 5):
    return None if x is None or (isinstance(x, float) and np.isnan(x)) else round(float(x), n)


def model_means(per: pd.DataFrame, kind: str = "all", metric: str = "kl") -> pd.DataFrame:
    """``seed x method`` table of the mean over heads of one metric on one prompt kind."""
    sub = per[(per.kind == kind) & (per.metric == metric)]
    return sub.pivot_table(index="seed", columns="method", values="value", aggfunc="mean")


def _mass(per: pd.DataFrame, heads: pd.DataFrame, metric: str, method: str) -> dict | None:
    if heads.empty:
        return None
    sub = per[(per.kind == "repeat") & (per.metric == metric)]
    sub = sub.merge(heads[HEAD].drop_duplicates(), on=HEAD)
    if sub.empty:
        return None
    m = sub.pivot_table(index="seed", columns="method", values="value", aggfunc="mean")
    out = {"n_heads": int(len(heads[HEAD].drop_duplicates())),
           "predicted": _r(m[method].mean(), 4), "predicted_sd": _r(m[method].std(ddof=1), 4) if len(m) > 1 else None,
           "true": _r(m["true"].iloc[0], 4)}
    if "positional" in m:
        out["positional"] = _r(m["positional"].iloc[0], 4)
    return out


def summarise_heads(per: pd.DataFrame, types: pd.DataFrame, fits: list, method: str = "model") -> tuple[dict, dict]:
    """Headline numbers (for ``metrics/``) and details (per kind, per head type, histories).

    Args:
        per: long per-head table (``model, layer, head, seed, method, kind, metric, value``) of one
            model, or of several (then every mean is over all their heads).
        types: ``model, layer, head, head_type`` of the labelled heads.
        fits: one :class:`~attendome.clone.training.FitResult` per replicate.
        method: the predictor's name in ``per`` (``model``).

    Returns:
        ``(headline, details)``.
    """
    seeds = sorted(per.seed.unique())
    kl = model_means(per)
    ratio = kl[method] / kl["positional"]
    wide = per[(per.kind == "all") & (per.metric == "kl")].pivot_table(
        index=HEAD, columns="method", values="value", aggfunc="mean")
    beats = float((wide[method] < wide["positional"]).mean())
    mse = model_means(per, "all", "mse")

    def sd(s: pd.Series):
        return _r(s.std(ddof=1)) if len(s) > 1 else None

    headline = {
        "n_heads": int(len(wide)), "n_seeds": len(seeds),
        "heldout_kl": _r(kl[method].mean()), "heldout_kl_sd": sd(kl[method]),
        "positional_kl": _r(kl["positional"].iloc[0]), "uniform_kl": _r(kl["uniform"].iloc[0]),
        "ratio_to_positional": _r(ratio.mean(), 4), "ratio_to_positional_sd": sd(ratio),
        "gain_over_positional": _r(1 - ratio.mean(), 4),
        "beats_positional": round(beats, 4),
        "heldout_mse": _r(mse[method].mean(), 6), "uniform_mse": _r(mse["uniform"].iloc[0], 6),
        "best_epochs": [f.best_epoch for f in fits], "epochs_run": [f.epochs_run for f in fits],
    }
    for kind in ("prose", "repeat"):
        k = model_means(per, kind)
        if len(k):
            headline[f"{kind}_kl"] = _r(k[method].mean())
            headline[f"{kind}_positional_kl"] = _r(k["positional"].iloc[0])
            headline[f"{kind}_ratio_to_positional"] = _r((k[method] / k["positional"]).mean(), 4)
    for ht, metric, name in (
        ("induction", "ind_mass", "induction_mass"),
        ("duplicate_token", "dup_mass", "duplicate_mass"),
    ):
        m = _mass(per, types[types.head_type == ht], metric, method)
        if m is not None:
            headline[name] = m

    details: dict = {"definition": __doc__.split("\n\n")[1:3], "by_kind": {}, "by_head_type": {}, "history": []}
    for kind in ("all", "prose", "repeat"):
        k, m2 = model_means(per, kind), model_means(per, kind, "mse")
        if len(k):
            details["by_kind"][kind] = {
                meth: {"kl": _r(k[meth].mean()), "mse": _r(m2[meth].mean(), 6)} for meth in k.columns
            }
    t = types.set_index(HEAD).index
    groups = {ht: g.set_index(HEAD).index for ht, g in types.groupby("head_type")}
    groups["untyped"] = wide.index.difference(t)
    for ht, idx in groups.items():
        idx = wide.index.intersection(idx)
        if len(idx):
            w = wide.loc[idx]
            details["by_head_type"][ht] = {
                "n_heads": int(len(idx)),
                "beats_positional": round(float((w[method] < w["positional"]).mean()), 4),
                **{meth: _r(w[meth].mean()) for meth in w.columns},
            }
    details["history"] = [
        {
            "best_epoch": f.best_epoch,
            "best_val_kl": _r(f.best_val),
            "epochs_run": f.epochs_run,
            "max_val_rise": _r(f.max_val_rise, 4),
            "curve": [{k: _r(v, 6) for k, v in h.items()} for h in f.history],
        }
        for f in fits
    ]
    return headline, details


def plot_training(fits: list, details: dict, title: str, path: str | Path, predictor: str = "predictor") -> None:
    """Two panels (PNG): train/validation KL per epoch for every replicate, the chosen epoch marked;
    held-out KL by head type for the predictor and the baselines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(13, 4.2))
    for r, f in enumerate(fits):
        ep = [h["epoch"] for h in f.history]
        c = f"C{r}"
        a.plot(ep, [h["train_kl"] for h in f.history], ls="--", color=c, alpha=0.7, label=f"train (seed {r})")
        a.plot(ep, [h["val_kl"] for h in f.history], color=c, label=f"validation (seed {r})")
        a.axvline(f.best_epoch, color=c, ls=":", lw=1)
    a.set_xlabel("epoch")
    a.set_ylabel("KL (lower is better)")
    a.set_title(f"{title}: training curves (dotted: chosen epoch)", fontsize=9)
    a.legend(fontsize=7)
    types = list(details["by_head_type"])
    methods = [
        m
        for m in ("model", "positional", "uniform", "previous", "bos")
        if types and m in details["by_head_type"][types[0]]
    ]
    w = 0.8 / max(1, len(methods))
    for i, m in enumerate(methods):
        b.bar(
            np.arange(len(types)) + i * w,
            [details["by_head_type"][t][m] for t in types],
            width=w,
            label=predictor if m == "model" else m,
        )
    b.set_xticks(np.arange(len(types)) + 0.4 - w / 2)
    b.set_xticklabels([f"{t}\n(n={details['by_head_type'][t]['n_heads']})" for t in types], fontsize=7, rotation=25)
    b.set_yscale("log")
    b.set_ylabel("held-out KL (log scale, lower is better)")
    b.set_title("held-out KL by atlas head type", fontsize=9)
    b.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)
