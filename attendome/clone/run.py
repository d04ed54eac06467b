"""The ``clone`` stage body: load one model's split data, train ``n_seeds`` cloners on the training
split with the epoch chosen on the validation split, evaluate them on held-out prompts, write the
outputs and track every run in MLflow."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch

from attendome.clone.data import build_data, fit_projection, SegmentData
from attendome.clone.evaluate import evaluate_heads
from attendome.clone.model import train_cloner
from attendome.clone.positional import mean_positional_pattern
from attendome.prep.corpus import check_disjoint
from attendome.core.io import load_tensors, save_tensors
from attendome.prep.store import load_attention
from attendome.clone.summary import plot_training, summarise_heads
from attendome.clone.training import seed_for, torch_threads
from attendome.core.io import read_parquet, write_json, write_parquet
from attendome.core.params import Params, TrainParams

__all__ = ["SplitData", "load_split_data", "head_labels", "run_clone", "METRIC_KEYS"]

# the DVC metric of a model's cloners (the rest of the summary is in data/clone/<model>.json)
METRIC_KEYS = ("heldout_kl", "heldout_kl_sd", "positional_kl", "ratio_to_positional", "beats_positional")


@dataclass
class SplitData:
    """One model's data on the three prompt splits, plus the feature projection and model facts."""

    train: SegmentData
    val: SegmentData
    heldout: SegmentData
    info: dict
    projection: tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def _kind(source: str) -> str:
    return "repeat" if source == "gen" else "prose"


def load_split_data(key: str, params: Params, root: str = ".", tp: TrainParams | None = None) -> SplitData:
    """Train, validation and held-out :class:`~attendome.clone.model.SegmentData` of model ``key``.

    ``tp`` (default ``params.clone``) gives the feature projection and position settings; the
    projection is fitted on training prompts only. Checks (not assumes) that no document is in two
    splits.
    """
    tp = tp or params.clone
    prompts = read_parquet(f"{root}/data/corpus/prompts.parquet")
    check_disjoint(prompts)
    segments = read_parquet(f"{root}/data/corpus/segments.parquet")
    seg_texts = {pid: g.sort_values("seg")["text"].tolist() for pid, g in segments.groupby("prompt_id")}
    feats, _ = load_tensors(f"{root}/data/features/features.safetensors")
    attn, ntok, info = load_attention(f"{root}/data/attention/{key}.safetensors")
    kinds = {r.prompt_id: _kind(r.source) for r in prompts.itertuples()}
    ids = {s: prompts[prompts.split == s].prompt_id.tolist() for s in ("train", "val", "heldout")}
    if not ids["train"] or not ids["val"] or not ids["heldout"]:
        raise ValueError(f"every split needs prompts; got { {s: len(v) for s, v in ids.items()} } "
                         "(corpus.held_out_fraction / corpus.val_fraction)")
    mean, std, proj = fit_projection(feats, ids["train"], tp.feature_dims)
    data = {s: build_data(v, feats, attn, mean, std, tp.position_dims, info["causal"], proj, ntok or None, kinds,
                          seg_texts) for s, v in ids.items()}
    return SplitData(data["train"], data["val"], data["heldout"], info, (mean, std, proj))


def head_labels(
    root: str = ".", key: str | None = None, positive: tuple[str, ...] = ("high", "medium")
) -> pd.DataFrame:
    """``model, layer, head, head_type`` for every head whose atlas label is in ``positive``."""
    atlas = read_parquet(f"{root}/data/atlas.parquet")
    if key is not None:
        atlas = atlas[atlas.model == key]
    strong = atlas[atlas.label.isin(list(positive))]
    return strong[["model", "layer", "head", "score_name"]].rename(columns={"score_name": "head_type"})


def _per_head(per: pd.DataFrame, key: str, n_heads: int, seed_index: int) -> pd.DataFrame:
    per = per.copy()
    per.insert(0, "model", key)
    per.insert(1, "layer", per.head_index // n_heads)
    per.insert(2, "head", per.head_index % n_heads)
    per.insert(3, "seed", seed_index)
    return per.drop(columns="head_index")


def run_clone(key: str, params: Params, progress: bool = True) -> dict:
    """:func:`_run_clone` on the fixed thread count of its params (:func:`~attendome.clone.training.torch_threads`)."""
    with torch_threads(params.clone.threads):
        return _run_clone(key, params, progress)


def _run_clone(key: str, params: Params, progress: bool = True) -> dict:
    """Train, evaluate, save and track the cloners of model ``key`` (the ``clone`` stage).

    Writes ``models/cloners/<key>.safetensors`` (every replicate's parameters ``s<i>.<name>`` and the
    feature projection), ``data/clone/<key>.parquet`` (per head, replicate, method, prompt kind and
    metric), ``data/clone/<key>.json`` (summary with per-type breakdowns and training histories),
    ``metrics/clone/<key>.json`` (headline numbers) and ``plots/clone/<key>.png`` (curves, KL by type).
    """
    import json

    from attendome.core.tracking import track_run

    sd = load_split_data(key, params)
    L, H = sd.info["n_layers"], sd.info["n_heads"]
    tp = params.clone
    positional = mean_positional_pattern(sd.train)
    tables, weights, fits = [], {}, []
    for r in range(tp.n_seeds):
        seed = seed_for(key, tp.seed, r)
        with track_run("attendome-clone", run_name=None, tags={"model": key, "phase": "1", "replicate": str(r)}) as tr:
            tr.log_params(
                {
                    **tp.model_dump(),
                    "model": key,
                    "encoder": params.features.encoder,
                    "replicate": r,
                    "init_seed": seed,
                    "n_train_prompts": len(sd.train),
                    "n_val_prompts": len(sd.val),
                    "n_heldout_prompts": len(sd.heldout),
                    "n_heads": L * H,
                }
            )
            model, res = train_cloner(
                sd.train, sd.val, tp, L * H, seed, tr, progress, desc=f"{key}: clone {r + 1}/{tp.n_seeds}"
            )
            per = _per_head(
                evaluate_heads(model, sd.heldout, L * H, tp.batch_prompts, positional=positional), key, H, r
            )
            kl = per.query("method == 'model' and kind == 'all' and metric == 'kl'")["value"].mean()
            tr.log_metrics({"best_epoch": res.best_epoch, "best_val_kl": res.best_val, "heldout_kl": kl})
        tables.append(per)
        fits.append(res)
        for name, p in model.named_parameters():
            weights[f"s{r}.{name}"] = p.detach().clone()
    per = pd.concat(tables, ignore_index=True)
    mean, std, proj = sd.projection
    weights.update(feature_mean=mean, feature_std=std, feature_proj=proj)
    meta = {
        "info": json.dumps(
            {
                **sd.info,
                "rank": tp.rank,
                "position_dims": tp.position_dims,
                "n_seeds": tp.n_seeds,
                "prev_keys": tp.prev_keys,
                "encoder": params.features.encoder,
                "init_seeds": [seed_for(key, tp.seed, r) for r in range(tp.n_seeds)],
            }
        )
    }
    save_tensors(weights, f"models/cloners/{key}.safetensors", meta)
    types = head_labels(key=key, positive=params.leaderboard.positive_labels)
    headline, details = summarise_heads(per, types, fits, method="model")
    details["headline"] = headline
    write_parquet(per, f"data/clone/{key}.parquet")
    write_json(details, f"data/clone/{key}.json")
    write_json({k: headline[k] for k in METRIC_KEYS}, f"metrics/clone/{key}.json")
    plot_training(fits, details, f"{key}: cloner (Phase 1)", f"plots/clone/{key}.png", predictor="cloner")
    return headline
