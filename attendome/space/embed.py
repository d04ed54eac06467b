"""The ``embed`` stage body: the universal encoder over all models, ``n_seeds`` replicates, each with
its held-out evaluation and the leave-one-model-out transfer test, every run tracked in MLflow."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from attendome.clone.losses import mean_kl
from attendome.clone.positional import mean_positional_pattern
from attendome.clone.run import head_labels, load_split_data
from attendome.core.io import save_tensors
from attendome.clone.summary import plot_training, summarise_heads
from attendome.clone.training import seed_for, torch_threads
from attendome.core.io import atomic_path, write_json, write_parquet
from attendome.core.params import EmbedParams, Params
from attendome.core.tracking import track_run
from attendome.space.universal import (ModelData, embedding_table, evaluate_universal, fit_new_embeddings,
                                       train_universal)

__all__ = ["load_model_data", "embed_metrics", "run_embed"]


def load_model_data(params: Params, tp: EmbedParams, root: str = ".") -> list[ModelData]:
    """:class:`~attendome.space.universal.ModelData` of every model, in ``params.models`` order."""
    out = []
    for key in params.models:
        sd = load_split_data(key, params, root, tp)
        out.append(ModelData(key, sd.train, sd.val, sd.heldout, sd.info["n_layers"], sd.info["n_heads"]))
    return out


def _r(x, n=5):
    return None if x is None or (isinstance(x, float) and np.isnan(x)) else round(float(x), n)


def _transfer(models: list[ModelData], tp: EmbedParams, r: int, updates: dict, progress: bool
              ) -> tuple[pd.DataFrame, dict]:
    """Leave ``tp.transfer_model`` out, train on the rest, then fit only its embeddings (see
    :mod:`attendome.space.universal`). Two MLflow runs: the shared network, and the transfer fit."""
    held = next(m for m in models if m.key == tp.transfer_model)
    rest = [m for m in models if m.key != tp.transfer_model]
    budget = float(np.mean(updates[held.key]))
    with track_run("attendome-universal", run_name=None,
                   tags={"phase": "2", "replicate": str(r), "role": f"shared network without {held.key}"}) as tr:
        tr.log_params({**tp.model_dump(), "models": ",".join(m.key for m in rest), "replicate": r})
        enc, res_rest, _ = train_universal(rest, tp, seed_for("universal-transfer", tp.seed, r), tr, progress,
                                           desc=f"universal without {held.key} ({r + 1}/{tp.n_seeds})")
    with track_run("attendome-universal", run_name=None,
                   tags={"phase": "2", "replicate": str(r), "role": f"transfer fit of {held.key}"}) as tr:
        tr.log_params({"model": held.key, "updates_per_head_budget": budget, "replicate": r,
                       "heads_per_batch": tp.heads_per_batch, "lr": tp.lr})
        emb, res = fit_new_embeddings(enc, held, tp, seed_for(f"transfer:{held.key}", tp.seed, r), budget, tr,
                                      progress)
        per = evaluate_universal(enc, held, tp.batch_prompts, emb=emb,
                                 positional=mean_positional_pattern(held.train))
        kl = per.query("method == 'model' and kind == 'all' and metric == 'kl'")["value"].mean()
        tr.log_metrics({"transfer.heldout_kl": kl, "transfer.best_epoch": res.best_epoch})
    per.insert(3, "seed", r)
    info = {"budget_updates_per_head": round(budget, 1), "epochs": res.max_epochs, "best_epoch": res.best_epoch,
            "max_val_rise": _r(res.max_val_rise, 4),
            "best_val_kl": _r(res.best_val), "heldout_kl": _r(kl),
            "rest_heldout_kl": {m.key: _r(mean_kl(lambda b, m=m: enc(m.key, b), m.heldout, tp.batch_prompts))
                                for m in rest},
            "curve": [{k: _r(v, 6) for k, v in h.items()} for h in res.history]}
    return per, info


def embed_metrics(headline: dict) -> dict:
    """The DVC metric of the embed stage (numbers only; the rest is in ``data/embed/summary.json``)."""
    out = {"heldout_kl": {m: h["heldout_kl"] for m, h in headline["models"].items()},
           "ratio_to_positional": {m: h["ratio_to_positional"] for m, h in headline["models"].items()}}
    t = headline.get("transfer")
    if t:
        out["transfer"] = {k: t[k] for k in ("heldout_kl", "joint_heldout_kl", "ratio_to_positional")}
    return out


def run_embed(params: Params, progress: bool = True) -> dict:
    """:func:`_run_embed` on the fixed thread count of its params (:func:`~attendome.clone.training.torch_threads`)."""
    with torch_threads(params.embed.threads):
        return _run_embed(params, progress)


def _run_embed(params: Params, progress: bool = True) -> dict:
    """Train the universal encoder ``n_seeds`` times, evaluate it, run the transfer test, write outputs.

    Writes ``models/universal.safetensors`` (every replicate's parameters ``s<i>.<name>``),
    ``data/embeddings/universal.parquet`` (``model, layer, head, seed, e_*``),
    ``data/embed/errors.parquet`` (per head, replicate, method, prompt kind, metric),
    ``data/embed/transfer.parquet``, ``data/embed/summary.json`` (details, curves),
    ``metrics/embed.json`` (headline) and ``plots/embed/training.png``.
    """
    tp = params.embed
    models = load_model_data(params, tp)
    errors, tables, weights, fits, transfer_rows, transfer_info = [], [], {}, [], [], []
    for r in range(tp.n_seeds):
        seed = seed_for("universal", tp.seed, r)
        with track_run("attendome-universal", run_name=None,
                       tags={"phase": "2", "dim": str(tp.dim), "replicate": str(r), "role": "joint"}) as tr:
            tr.log_params({**tp.model_dump(), "models": ",".join(m.key for m in models), "replicate": r,
                           "init_seed": seed, "encoder": params.features.encoder})
            enc, res, updates = train_universal(models, tp, seed, tr, progress,
                                                desc=f"universal encoder ({r + 1}/{tp.n_seeds})")
            for m in models:
                per = evaluate_universal(enc, m, tp.batch_prompts, positional=mean_positional_pattern(m.train))
                per.insert(3, "seed", r)
                errors.append(per)
            kl = {
                m.key: float(
                    errors[-len(models) + i]
                    .query("method == 'model' and kind == 'all' and metric == 'kl'")["value"]
                    .mean()
                )
                for i, m in enumerate(models)
            }
            tr.log_metrics(
                {
                    "best_epoch": res.best_epoch,
                    "best_val_kl": res.best_val,
                    **{f"heldout_kl.{k}": v for k, v in kl.items()},
                }
            )
        fits.append(res)
        t = embedding_table(models, {m.key: enc.embedding(m.key) for m in models})
        t.insert(3, "seed", r)
        tables.append(t)
        for name, p in enc.named_parameters():
            weights[f"s{r}.{name}"] = p.detach().clone()
        if tp.transfer_model:
            per, info = _transfer(models, tp, r, updates, progress)
            transfer_rows.append(per)
            transfer_info.append(info)
    errors = pd.concat(errors, ignore_index=True)
    save_tensors(
        weights,
        "models/universal.safetensors",
        {
            "info": json.dumps(
                {
                    "models": [m.key for m in models],
                    "dim": tp.dim,
                    "rank": tp.rank,
                    "n_seeds": tp.n_seeds,
                    "prev_keys": tp.prev_keys,
                    "init_seeds": [seed_for("universal", tp.seed, r) for r in range(tp.n_seeds)],
                }
            )
        },
    )
    write_parquet(pd.concat(tables, ignore_index=True), "data/embeddings/universal.parquet")
    write_parquet(errors, "data/embed/errors.parquet")
    headline: dict = {"n_seeds": tp.n_seeds, "dim": tp.dim, "models": {}}
    details: dict = {"settings": tp.model_dump(), "models": {}}
    pos = params.leaderboard.positive_labels
    for m in models:
        h, d = summarise_heads(errors[errors.model == m.key], head_labels(key=m.key, positive=pos), fits)
        headline["models"][m.key] = {k: v for k, v in h.items() if k not in ("best_epochs", "epochs_run")}
        details["models"][m.key] = {"by_kind": d["by_kind"], "by_head_type": d["by_head_type"]}
    headline["best_epochs"] = [f.best_epoch for f in fits]
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
    if tp.transfer_model:
        tr_per = pd.concat(transfer_rows, ignore_index=True)
        write_parquet(tr_per, "data/embed/transfer.parquet")
        k = tp.transfer_model
        h, _ = summarise_heads(tr_per, head_labels(key=k, positive=pos), fits)
        joint = headline["models"][k]
        kls = [i["heldout_kl"] for i in transfer_info]
        headline["transfer"] = {
            "model": k,
            "heldout_kl": _r(np.mean(kls)),
            "heldout_kl_sd": _r(np.std(kls, ddof=1)) if len(kls) > 1 else None,
            "joint_heldout_kl": joint["heldout_kl"],
            "positional_kl": h["positional_kl"],
            "ratio_to_positional": h["ratio_to_positional"],
            "budget_updates_per_head": round(float(np.mean([i["budget_updates_per_head"] for i in transfer_info])), 1),
        }
        details["transfer"] = transfer_info
    else:
        write_parquet(pd.DataFrame(), "data/embed/transfer.parquet")
    details["headline"] = headline
    write_json(details, "data/embed/summary.json")
    curves = pd.DataFrame({"epoch": range(max(len(f.history) for f in fits))})
    for r, f in enumerate(fits):
        curves[f"val_kl_{r}"] = pd.Series([h["val_kl"] for h in f.history])
        curves[f"train_kl_{r}"] = pd.Series([h["train_kl"] for h in f.history])
    for r in range(len(fits), 3):  # the plot in dvc.yaml names three replicates; fewer leave empty columns
        curves[f"val_kl_{r}"] = np.nan
    with atomic_path("data/embed/curves.csv") as tmp:
        curves.to_csv(tmp, index=False)
    write_json(embed_metrics(headline), "metrics/embed.json")
    _, pooled = summarise_heads(errors, head_labels(positive=pos), fits)
    plot_training(
        fits, pooled, "universal encoder (Phase 2, all models)", "plots/embed/training.png", predictor="universal"
    )
    return headline
