"""The ``clone`` stage body: load one model's split data, train and evaluate its cloner, write outputs."""

from __future__ import annotations

import pandas as pd

from attendome.core.params import Params

__all__ = ["load_split_data", "head_types", "summarise_clone", "plot_clone_by_type", "run_clone"]


def load_split_data(key: str, params: Params, root: str = ".", tp=None):
    """Train and held-out :class:`~attendome.clone.cloner.SegmentData` of model ``key``, plus metadata.

    ``tp`` (default ``params.clone``) gives the feature projection and position settings. Checks
    (not assumes) that no held-out prompt is used in training.
    """
    tp = tp or params.clone
    import json

    import torch

    from attendome.clone.cloner import build_data, fit_projection
    from attendome.clone.corpus import check_disjoint
    from attendome.core.io import read_parquet
    from attendome.clone.segattn import load_tensors

    prompts = read_parquet(f"{root}/data/corpus/prompts.parquet")
    check_disjoint(prompts)
    feats, _ = load_tensors(f"{root}/data/features/features.safetensors")
    attn, meta = load_tensors(f"{root}/data/attention/{key}.safetensors")
    info = json.loads(meta["info"])
    tr = prompts[prompts.split == "train"].prompt_id.tolist()
    ho = prompts[prompts.split == "heldout"].prompt_id.tolist()
    if set(tr) & set(ho):
        raise ValueError("a prompt is in both splits")
    mean, std, proj = fit_projection(feats, tr, tp.feature_dims)
    pd_ = tp.position_dims
    train = build_data(tr, feats, attn, mean, std, pd_, info["causal"], proj)
    held = build_data(ho, feats, attn, mean, std, pd_, info["causal"], proj)
    return train, held, info, (mean, std, proj)


def head_types(root: str = ".", key: str | None = None) -> pd.DataFrame:
    """``model, layer, head, head_type`` for every head labelled high/medium in the atlas."""
    from attendome.core.io import read_parquet

    atlas = read_parquet(f"{root}/data/atlas.parquet")
    if key is not None:
        atlas = atlas[atlas.model == key]
    strong = atlas[atlas.label.isin(["high", "medium"])]
    return strong[["model", "layer", "head", "score_name"]].rename(columns={"score_name": "head_type"})


def summarise_clone(per_head: pd.DataFrame, types: pd.DataFrame) -> dict:
    """Per-model and per-head-type means of held-out KL/MSE for the cloner and each baseline.

    ``beats_baselines``: fraction of heads whose cloner KL is below every baseline's KL.
    """
    wide = per_head.pivot_table(index=["layer", "head"], columns=["metric", "method"], values="value")
    kl = wide["kl"]
    base_cols = [c for c in kl.columns if c != "model"]
    beats = kl["model"] < kl[base_cols].min(axis=1)
    def means(idx) -> dict:
        return {m: {met: round(float(wide[met][m].loc[idx].mean()), 5) for met in ("kl", "mse")} for m in kl.columns}

    out = {"n_heads": int(len(kl)), "beats_baselines": round(float(beats.mean()), 4), "heldout": means(wide.index)}
    by_type = {}
    t = types.set_index(["layer", "head"])
    groups = {ht: [i for i in g.index if i in wide.index] for ht, g in t.groupby("head_type")}
    groups["untyped"] = [i for i in wide.index if i not in set(t.index)]
    for ht, idx in groups.items():
        if idx:
            by_type[ht] = {"n_heads": len(idx), "beats_baselines": round(float(beats.loc[idx].mean()), 4), **means(idx)}
    out["by_head_type"] = by_type
    return out, beats


def plot_clone_by_type(summary: dict, title: str, path) -> None:
    """Grouped bars: held-out KL per head type for the cloner and each baseline (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from attendome.core.io import atomic_path

    types = list(summary["by_head_type"])
    methods = list(summary["heldout"])
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(types) + 2), 4))
    w = 0.8 / len(methods)
    for i, m in enumerate(methods):
        vals = [summary["by_head_type"][t][m]["kl"] for t in types]
        ax.bar(np.arange(len(types)) + i * w, vals, width=w, label="cloner" if m == "model" else m)
    ax.set_xticks(np.arange(len(types)) + 0.4 - w / 2)
    ax.set_xticklabels([f"{t}\n(n={summary['by_head_type'][t]['n_heads']})" for t in types], fontsize=8)
    ax.set_ylabel("held-out KL (lower is better)")
    ax.set_yscale("log")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)


def run_clone(key: str, params: Params, progress: bool = True) -> dict:
    """Train, evaluate, save and track the cloner of model ``key`` (the ``clone`` stage)."""
    import json

    import torch

    from attendome.clone.cloner import evaluate_heads, mean_positional_pattern, train_cloner
    from attendome.core.io import write_json, write_parquet
    from attendome.clone.segattn import save_tensors
    from attendome.core.tracking import track_run

    train, held, info, (mean, std, proj) = load_split_data(key, params)
    L, H = info["n_layers"], info["n_heads"]
    tp = params.clone
    with track_run("attendome-clone", tags={"model": key, "phase": "1"}) as tr:
        tr.log_params({**tp.model_dump(), "model": key, "encoder": params.features.encoder,
                       "n_train_prompts": len(train.Z), "n_heldout_prompts": len(held.Z), "n_heads": L * H})
        model, history = train_cloner(train, held, tp, L * H, tracker=tr, progress=progress, desc=f"{key}: clone")
        per = evaluate_heads(lambda Z, v: model(Z, v), held, L * H, tp.batch_prompts,
                             positional=mean_positional_pattern(train))
        per.insert(0, "model", key)
        per.insert(1, "layer", per.head_index // H)
        per.insert(2, "head", per.head_index % H)
        per = per.drop(columns="head_index")
        summary, beats = summarise_clone(per, head_types(key=key))
        summary["history"] = {"final_train_kl": history[-1]["train_kl"], "final_heldout_kl": history[-1]["heldout_kl"],
                              "epochs": len(history)}
        tr.log_metrics({"final_heldout_kl": summary["heldout"]["model"]["kl"],
                        "final_heldout_mse": summary["heldout"]["model"]["mse"],
                        "beats_baselines": summary["beats_baselines"]})
        weights = {"Q": model.Q.detach(), "K": model.K.detach(), "sink_w": model.sink_w.detach(),
                   "sink_b": model.sink_b.detach(), "rel": model.rel.detach(), "feature_mean": mean,
                   "feature_std": std, "feature_proj": proj}
        meta = {"info": json.dumps({**info, "rank": tp.rank, "position_dims": tp.position_dims,
                                    "encoder": params.features.encoder})}
        save_tensors(weights, f"models/cloners/{key}.safetensors", meta)
        tr.log_artifact(f"models/cloners/{key}.safetensors")
    b = beats.reset_index().rename(columns={0: "beats_baselines"})
    per = per.merge(b, on=["layer", "head"], how="left")
    write_parquet(per, f"data/clone/{key}.parquet")
    write_json(summary, f"metrics/clone/{key}.json")
    plot_clone_by_type(summary, f"{key}: held-out KL by head type", f"plots/clone/{key}.png")
    return summary
