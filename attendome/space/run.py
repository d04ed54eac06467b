"""Glue for the Phase 2 stages: universal embeddings, baselines, leaderboard."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import torch

from attendome.core.io import atomic_path, read_parquet, write_json, write_parquet
from attendome.core.params import Params

__all__ = ["load_model_data", "run_embed", "run_baselines", "run_leaderboard", "METHODS", "primary_type"]

METHODS = ("universal", "random", "scores", "rsa", "cloner")
TYPE_PRIORITY = ("induction", "retrieval", "retrieval_tf", "previous_token", "duplicate_token", "copying", "copying_ov")


def load_model_data(params: Params, tp, root: str = "."):
    """:class:`~attendome.space.universal.ModelData` of every model, in ``params.models`` order."""
    from attendome.clone.run import load_split_data
    from attendome.space.universal import ModelData

    out = []
    for key in params.models:
        train, held, info, _ = load_split_data(key, params, root, tp)
        out.append(ModelData(key, train, held, info["n_layers"], info["n_heads"]))
    return out


def run_embed(params: Params, progress: bool = True) -> dict:
    """Train the universal encoder on all models, evaluate it, run the held-out-model transfer."""
    from attendome.clone.cloner import mean_positional_pattern
    from attendome.clone.segattn import save_tensors
    from attendome.core.tracking import track_run
    from attendome.space.universal import (embedding_table, evaluate_universal, fit_new_embeddings, mean_kl,
                                     train_universal)

    tp = params.embed
    models = load_model_data(params, tp)
    summary: dict = {"models": {}, "settings": tp.model_dump()}
    with track_run("attendome-universal", run_name=None, tags={"phase": "2", "dim": str(tp.dim)}) as tr:
        tr.log_params({**tp.model_dump(), "models": ",".join(m.key for m in models),
                       "encoder": params.features.encoder})
        enc, hist = train_universal(models, tp, tracker=tr, progress=progress, desc="universal encoder")
        errors = []
        for m in models:
            per = evaluate_universal(enc, m, tp.batch_prompts, positional=mean_positional_pattern(m.train))
            errors.append(per)
            w = per.pivot_table(index=["layer", "head"], columns=["metric", "method"], values="value")
            summary["models"][m.key] = {met: {meth: round(float(w[met][meth].mean()), 5) for meth in w[met].columns}
                                        for met in ("kl", "mse")}
        tr.log_metrics({f"heldout_kl.{k}": v["kl"]["model"] for k, v in summary["models"].items()})
        embs = {m.key: enc.emb[m.key.replace(".", "_")].detach() for m in models}
        weights = {n: p.detach() for n, p in enc.named_parameters()}
        save_tensors(weights, "models/universal.safetensors",
                     {"info": json.dumps({"models": [m.key for m in models], "dim": tp.dim, "rank": tp.rank})})
        tr.log_artifact("models/universal.safetensors")
        if tp.transfer_model:
            summary["transfer"] = _transfer(models, tp, progress)
            summary["transfer"]["joint_run_kl"] = summary["models"][tp.transfer_model]["kl"]["model"]
            tr.log_metrics({"transfer.heldout_kl": summary["transfer"]["transfer_kl"]})
    write_parquet(embedding_table(models, embs), "data/embeddings/universal.parquet")
    write_parquet(pd.concat(errors, ignore_index=True), "data/embed/errors.parquet")
    summary["final_train_kl"] = hist[-1]["train_kl"]
    write_json(summary, "metrics/embed.json")
    return summary


def _transfer(models, tp, progress: bool) -> dict:
    """Train without ``tp.transfer_model``, then fit only its embeddings (shared network frozen)."""
    from attendome.space.universal import fit_new_embeddings, mean_kl, train_universal

    held = next(m for m in models if m.key == tp.transfer_model)
    rest = [m for m in models if m.key != tp.transfer_model]
    enc, _ = train_universal(rest, tp, progress=progress, desc=f"universal without {held.key}")
    emb = fit_new_embeddings(enc, held, tp, progress)
    in_training = {m.key: round(mean_kl(enc, m, tp.batch_prompts), 5) for m in rest}
    return {"model": held.key, "transfer_kl": round(mean_kl(enc, held, tp.batch_prompts, emb=emb), 5),
            "in_training_kl": in_training,
            "in_training_mean_kl": round(float(np.mean(list(in_training.values()))), 5),
            "definition": "held-out-prompt KL of the left-out model with the shared network frozen and only "
                          "its embeddings fitted, next to the in-training models' held-out KL of the same run "
                          "and to the same model's KL when it was trained jointly (joint_run_kl)"}


def _index(params: Params) -> pd.DataFrame:
    u = read_parquet("data/embeddings/universal.parquet")
    return u[["model", "layer", "head"]]


def run_baselines(params: Params) -> None:
    """Write the random, score-vector, RSA and cloner baseline embedding tables."""
    from attendome.space.baselines import (cloner_embeddings, cloner_vectors, random_embeddings, rsa_embeddings,
                                     rsa_vectors, score_embeddings)
    from attendome.clone.segattn import load_tensors

    index = _index(params)
    dim = params.embed.dim
    prompts = read_parquet("data/corpus/prompts.parquet")
    held = prompts[prompts.split == "heldout"].prompt_id.tolist()
    write_parquet(random_embeddings(index, dim, params.leaderboard.seed), "data/embeddings/random.parquet")
    write_parquet(score_embeddings(read_parquet("data/atlas.parquet"), index), "data/embeddings/scores.parquet")
    rsa, clo = {}, {}
    for key in params.models:
        maps, _ = load_tensors(f"data/attention/{key}.safetensors")
        rsa[key] = rsa_vectors(maps, held)
        w, _ = load_tensors(f"models/cloners/{key}.safetensors")
        clo[key] = cloner_vectors(w)
    write_parquet(rsa_embeddings(rsa, index, dim), "data/embeddings/rsa.parquet")
    write_parquet(cloner_embeddings(clo, index, dim), "data/embeddings/cloner.parquet")


def primary_type(atlas: pd.DataFrame, labels=("high", "medium")) -> pd.DataFrame:
    """One head type per head for plots: the first type in a fixed priority whose label is strong."""
    strong = atlas[atlas.label.isin(labels)]
    rank = {t: i for i, t in enumerate(TYPE_PRIORITY)}
    strong = strong.assign(r=strong.score_name.map(rank).fillna(99)).sort_values("r")
    first = strong.drop_duplicates(["model", "layer", "head"])[["model", "layer", "head", "score_name"]]
    heads = atlas[["model", "layer", "head"]].drop_duplicates()
    out = heads.merge(first, how="left", on=["model", "layer", "head"]).rename(columns={"score_name": "head_type"})
    out["head_type"] = out["head_type"].fillna("untyped")
    return out


def run_leaderboard(params: Params) -> dict:
    """Score every method; write metrics, the outlier table and plots."""
    from attendome.space.leaderboard import flag_outliers, lomo_f1, retrieval_at_k

    lp = params.leaderboard
    atlas = read_parquet("data/atlas.parquet")
    ind = atlas[atlas.score_name == "induction"].set_index(["model", "layer", "head"])["label"]
    errors = read_parquet("data/embed/errors.parquet")
    board: dict = {"definitions": {
        "retrieval@k": "induction query heads vs heads of all other models, cosine; recall/hit in [0,1], higher better",
        "f1": "leave-one-model-out logistic regression, induction vs not; [0,1], higher better",
        "reconstruction_mse": "held-out prompts, mean over heads; lower better",
        "scores": "the atlas score vector includes the induction score that defines the labels: an upper "
                  "reference, circular by construction, not a competitor",
        "outlier_rate": f"share of heads flagged non-embeddable ({lp.outlier_rule} > {lp.outlier_threshold})"},
        "methods": {}}
    curves = {}
    for method in METHODS:
        emb = read_parquet(f"data/embeddings/{method}.parquet")
        key = pd.MultiIndex.from_frame(emb[["model", "layer", "head"]])
        labels = ind.reindex(key).isin(lp.induction_labels).to_numpy()
        X = emb[[c for c in emb.columns if c.startswith("e_")]].to_numpy()
        r = retrieval_at_k(X, emb["model"].to_numpy(), labels, lp.ks)
        f = lomo_f1(X, emb["model"].to_numpy(), labels, lp.seed)
        row = {"dim": X.shape[1], "n_queries": r["n_queries"], **f}
        for k, v in r["k"].items():
            row[f"retrieval@{k}"] = v
        curves[method] = r["k"]
        board["methods"][method] = row
    # reconstruction and outliers: methods that reconstruct attention
    u = errors[(errors.method == "model")].pivot_table(index=["model", "layer", "head"], columns="metric", values="value")
    uni = errors[(errors.method == "uniform")].pivot_table(index=["model", "layer", "head"], columns="metric", values="value")
    score, flagged = flag_outliers(u["kl"].to_numpy(), lp.outlier_rule, lp.outlier_threshold)
    board["methods"]["universal"].update(reconstruction_mse=round(float(u["mse"].mean()), 6),
                                         reconstruction_kl=round(float(u["kl"].mean()), 5),
                                         uniform_mse=round(float(uni["mse"].mean()), 6),
                                         outlier_rate=round(float(flagged.mean()), 4))
    clone = pd.concat([read_parquet(f"data/clone/{k}.parquet") for k in params.models], ignore_index=True)
    cm = clone[clone.method == "model"].pivot_table(index=["model", "layer", "head"], columns="metric", values="value")
    cscore, cflag = flag_outliers(cm["kl"].to_numpy(), lp.outlier_rule, lp.outlier_threshold)
    board["methods"]["cloner"].update(reconstruction_mse=round(float(cm["mse"].mean()), 6),
                                      reconstruction_kl=round(float(cm["kl"].mean()), 5),
                                      uniform_mse=round(float(uni["mse"].mean()), 6),
                                      outlier_rate=round(float(cflag.mean()), 4))
    for m in ("random", "scores", "rsa"):
        board["methods"][m].update(reconstruction_mse=None, outlier_rate=None)
    types = primary_type(atlas, lp.induction_labels).set_index(["model", "layer", "head"])
    out = u.reset_index().assign(outlier_score=score, flagged=flagged)
    out = out.merge(types.reset_index(), on=["model", "layer", "head"], how="left")
    labs = atlas.pivot_table(index=["model", "layer", "head"], columns="score_name", values="label", aggfunc="first")
    out = out.merge(labs.add_prefix("label_").reset_index(), on=["model", "layer", "head"], how="left")
    write_parquet(out[out.flagged].rename(columns={"kl": "heldout_kl", "mse": "heldout_mse"}).reset_index(drop=True),
                  "data/outliers.parquet")
    board["outliers"] = {"n_flagged": int(flagged.sum()), "n_heads": int(len(flagged)),
                         "by_model": out[out.flagged].groupby("model").size().to_dict()}
    write_json(board, "metrics/leaderboard.json")
    _plots(params, curves, out, types)
    return board


def _save(fig, path: str) -> None:
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)


def _plots(params: Params, curves: dict, out: pd.DataFrame, types: pd.DataFrame) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from attendome.space.baselines import pca

    emb = read_parquet("data/embeddings/universal.parquet")
    X = emb[[c for c in emb.columns if c.startswith("e_")]].to_numpy()
    P = pca(X, 2)
    t = types.reindex(pd.MultiIndex.from_frame(emb[["model", "layer", "head"]]))["head_type"].fillna("untyped").to_numpy()
    fig, axes = plt.subplots(1, 2, figsize=(12, 5))
    for ax, colour_by, values in ((axes[0], "head type", t), (axes[1], "model", emb["model"].to_numpy())):
        for v in sorted(set(values), key=lambda x: (x == "untyped", x)):
            m = values == v
            ax.scatter(P[m, 0], P[m, 1], s=8 if v == "untyped" else 18, alpha=0.35 if v == "untyped" else 0.85,
                       label=f"{v} ({m.sum()})")
        ax.set_title(f"universal embeddings (PCA), coloured by {colour_by}", fontsize=9)
        ax.legend(fontsize=7, markerscale=1.5)
    _save(fig, "plots/leaderboard/embeddings_pca.png")

    fig, ax = plt.subplots(figsize=(6, 4))
    ks = list(params.leaderboard.ks)
    for method, c in curves.items():
        ax.plot(ks, [c[k]["recall"] for k in ks], marker="o", label=method)
    ax.plot(ks, [curves["random"][k]["recall_chance"] for k in ks], "k--", label="chance")
    ax.set_xlabel("k")
    ax.set_ylabel("induction-retrieval recall@k")
    ax.set_xscale("log")
    ax.legend(fontsize=7)
    _save(fig, "plots/leaderboard/retrieval_at_k.png")

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.hist(out["kl"], bins=50, color="tab:blue", alpha=0.8)
    if out["flagged"].any():
        ax.axvline(out.loc[out["flagged"], "kl"].min(), color="red", ls="--", label="non-embeddable")
        ax.legend(fontsize=7)
    ax.set_xlabel("held-out KL of the universal encoder (outlier score)")
    ax.set_ylabel("heads")
    _save(fig, "plots/leaderboard/outlier_scores.png")
