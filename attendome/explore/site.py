"""The head explorer: a static site that opens from disk with no network (stage ``explore``).

``reports/explorer/`` holds ``index.html`` with its script and style beside it (``app.js``,
``app.css``, no CDN, no server), the run's data as scripts (``data.js``; ``attn/<model>.js``,
loaded when a head of that model is opened: browsers refuse ``fetch`` of ``file://`` URLs but load
``<script src>``), the paper figures (``figures/``, :mod:`attendome.explore.figures`) and a DVC plots
template with Vega inlined (``dvc-plots-template.html``: ``dvc plots show --html-template
reports/explorer/dvc-plots-template.html`` renders offline).

What it shows, and how each part is made (the definitional choices):

* **The map**: every head of every model of the run in 2-D, per method. The coordinates are the
  first two principal components of the method's embeddings after the leaderboard's own
  preprocessing (:func:`attendome.board.run.fit_transform`: ``leaderboard.centering``, components
  fitted on the non-control heads, controls projected into that plane), replicate 0. Colour: the
  head's atlas type (the first positive label in the order of
  :func:`attendome.board.plots._primary_type`), shape: its model; controls are hollow, non-embeddable
  heads (``data/outliers.parquet``) have a red ring.
* **The head card**: every atlas score with its standard error and label; layer and KV group; the
  outlier score (within-model robust z of ``log(KL / positional KL)``, :func:`attendome.board.metrics.flag_outliers`)
  for the universal encoder and the cloners; true, cloner and universal segment attention on
  ``explore.prompts`` held-out prompts (replicate 0 of each predictor, reloaded by
  :mod:`attendome.explore.predict`; the first ``explore.max_segments`` segments, sink column first;
  values quantised to 1/255 for the page); its nearest head in every other model under each method
  (``data/correspondence.parquet``: cosine similarity, mutual or not, the other head's types).
* **The leaderboard**: mAP per head type and method with the bootstrap CI over models and the
  chance level, the paired differences, reconstruction per model (all from
  ``metrics/leaderboard.json``), and the atlas as per-model layer x head grids.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from attendome.board.metrics import flag_outliers
from attendome.board.plots import _primary_type
from attendome.board.records import Board
from attendome.board.run import fit_transform, head_meta
from attendome.clone.run import load_split_data
from attendome.core.cache import atomic_dir
from attendome.core.io import disk_full_error, no_space, read_json, read_parquet
from attendome.core.params import Params, ParamsError
from attendome.core.progress import progress
from attendome.explore.figures import paper_figures
from attendome.explore.predict import load_cloner, load_universal, predict_attention
from attendome.prep.store import load_attention_info
from attendome.space.methods import METHODS

__all__ = ["SITE_FILES", "build_explorer", "check_params", "dvc_plots_template", "head_table", "map_coordinates",
           "attention_examples", "leaderboard_tables"]

HEAD = ["model", "layer", "head"]
# the page's own files, copied from the package (attendome/explore/assets)
SITE_FILES = ("index.html", "app.js", "app.css")
VENDOR = ("vega.min.js", "vega-lite.min.js", "vega-embed.min.js")


def check_params(params: Params) -> None:
    """Refuse unknown map methods and a correspondence pair outside the run (before any work)."""
    bad = [m for m in params.explore.methods if m not in METHODS]
    if bad:
        raise ParamsError(f"explore.methods: unknown embedding method(s) {bad}; registered: {sorted(METHODS)}")
    pair = params.explore.pair
    if pair and (set(pair) - set(params.models) or pair[0] == pair[1]):
        raise ParamsError(f"explore.pair: two different models of the run, got {list(pair)}; "
                          f"models: {list(params.models)}")


def _r(x, n: int = 4):
    return None if x is None or (isinstance(x, float) and not np.isfinite(x)) else round(float(x), n)


def head_table(params: Params, root: str = ".") -> pd.DataFrame:
    """One row per head of the run: ``model, layer, head, family, control, cluster, kv, primary`` and
    ``label_<type>`` (see :func:`attendome.board.run.head_meta`), in the universal table's order."""
    atlas = read_parquet(f"{root}/data/atlas.parquet")
    index = read_parquet(f"{root}/data/embeddings/universal.parquet").query("seed == 0")[HEAD]
    kv = {}
    for m in params.models:
        info = load_attention_info(f"{root}/data/attention/{m}.safetensors")
        kv[m] = (info["n_heads"], info.get("n_kv_heads") or info["n_heads"])
    meta = head_meta(params, index.reset_index(drop=True), atlas, kv)
    meta["kv"] = [int(c.rsplit("|", 1)[1]) for c in meta.cluster]
    meta["primary"] = _primary_type(meta, params.leaderboard.positive_labels)
    return meta


def map_coordinates(params: Params, meta: pd.DataFrame, method: str, root: str = ".") -> np.ndarray:
    """``(N, 2)`` map coordinates of the heads of ``meta`` under ``method`` (see module docstring)."""
    table = read_parquet(f"{root}/data/embeddings/{method}.parquet")
    t = meta[HEAD].merge(table[table.seed == table.seed.min()], on=HEAD, how="left")
    cols = [c for c in t.columns if c.startswith("e_")]
    X = t[cols].to_numpy(dtype=float)
    if np.isnan(X).any():
        raise ValueError(f"data/embeddings/{method}.parquet lacks heads of the run; rerun dvc repro")
    real = ~meta.control.to_numpy()
    return fit_transform(X, real, meta.model.to_numpy(), 2, params.leaderboard.centering)


def _outlier_scores(params: Params, meta: pd.DataFrame, root: str) -> dict[str, pd.DataFrame]:
    """Per predictor, every head's ``ratio`` (held-out KL / positional KL) and within-model ``score``."""
    lp = params.leaderboard
    sources = {
        "universal": read_parquet(f"{root}/data/embed/errors.parquet"),
        "cloner": pd.concat([read_parquet(f"{root}/data/clone/{k}.parquet") for k in params.models]),
    }
    out = {}
    for name, per in sources.items():
        sub = per[(per.kind == "all") & (per.metric == "kl") & per.method.isin(["model", "positional"])]
        sub = sub.assign(method=sub.method.replace({"model": "predicted"}))  # 'model' is also a column
        w = sub.pivot_table(index=HEAD, columns="method", values="value", aggfunc="mean").reset_index()
        w = meta[HEAD].merge(w, on=HEAD, how="left")
        ratio = (w["predicted"] / w["positional"]).to_numpy()
        score, _ = flag_outliers(ratio, w.model.to_numpy(), lp.outlier_threshold, lp.outlier_min_ratio, lp.outlier_rule)
        out[name] = pd.DataFrame({"ratio": ratio, "score": score})
    return out


def _positions(meta: pd.DataFrame) -> dict[tuple, int]:
    """``{(model, layer, head): row of meta}``."""
    return {k: i for i, k in enumerate(zip(meta.model, meta.layer, meta["head"]))}


def _scores(root: str, meta: pd.DataFrame) -> list[dict]:
    """Per head (``meta`` order) ``{type: [value, stderr, label, method]}`` from the atlas."""
    atlas = read_parquet(f"{root}/data/atlas.parquet")
    pos = _positions(meta)
    out: list[dict] = [{} for _ in range(len(meta))]
    for r in atlas.itertuples(index=False):
        i = pos.get((r.model, r.layer, r.head))
        if i is not None:
            out[i][r.score_name] = [_r(r.value), _r(r.stderr), r.label, r.method]
    return out


def _nearest(root: str, meta: pd.DataFrame) -> list[dict]:
    """Per head ``{method: [[other head index, similarity, mutual], ...]}`` (one per other model)."""
    corr = read_parquet(f"{root}/data/correspondence.parquet")
    pos = _positions(meta)
    out: list[dict] = [{} for _ in range(len(meta))]
    for r in corr.itertuples(index=False):
        i, j = pos.get((r.model, r.layer, r.head)), pos.get((r.other_model, r.other_layer, r.other_head))
        if i is not None and j is not None:
            out[i].setdefault(r.method, []).append([j, _r(r.similarity, 3), bool(r.mutual)])
    return out


def _ci_text(e: dict | None) -> tuple[float | None, str]:
    if not e:
        return None, "-"
    ci = e.get("ci95_by_model") or e.get("ci95")
    text = f"{e['mean']:.3f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")
    return e["mean"], text


def _cell(v, text: str | None = None) -> dict:
    v = _r(v) if isinstance(v, (int, float)) else v
    return {"v": v, "t": text if text is not None else ("-" if v is None else f"{v:.3f}")}


def leaderboard_tables(board: Board) -> list[dict]:
    """The leaderboard as sortable tables: ``[{title, note, columns, rows: [[{v, t}, ...]]}]``."""
    tables = []
    for typ in board.get("types", []):
        rows = []
        for method, per in board["methods"].items():
            e = per.get(typ, {})
            a = e.get("all", {})
            m = a.get("map", {})
            mv, mt = _ci_text(m)
            cls = e.get("classification", {}) or {}
            f1 = cls.get("f1")
            rows.append([
                _cell(method, method), _cell(mv, mt), _cell(m.get("chance")),
                _cell((m.get("kv_collapsed") or {}).get("mean")), _cell((m.get("null") or {}).get("p95")),
                _cell((a.get("precision@5") or {}).get("mean")), _cell((a.get("hit@10") or {}).get("mean")),
                _cell((e.get("cross_family", {}).get("map") or {}).get("mean")), _cell(f1),
            ])
        pool = board.get("pools", {}).get(typ, {})
        tables.append({
            "title": f"{typ}: retrieval of heads of the same type in other models",
            "note": f"{pool.get('n_positive', '?')} positives in a pool of {pool.get('n_pool', '?')} heads. mAP: mean "
                    "average precision, [0, 1], higher is better, with the 95 % bootstrap CI over models; chance: "
                    "the exact expected AP of a random ranking; KV-collapsed: query heads of one KV group merged; "
                    "null p95: 95th percentile of the label-permutation null; cross-family: only other families "
                    "retrieved; F1: leave-one-model-out logistic regression.",
            "columns": ["method", "mAP [95 % CI]", "chance", "mAP KV-collapsed", "null p95", "precision@5",
                        "hit@10", "mAP cross-family", "LOMO F1"],
            "rows": rows,
        })
    diffs = board.get("differences", {})
    rows = []
    for typ, per in diffs.items():
        for other, d in (per or {}).items():
            if not isinstance(d, dict) or "mean" not in d:
                continue
            ci = d.get("ci95_by_model") or d.get("ci95") or [None, None]
            rows.append([_cell(typ, typ), _cell(other, other.replace("-", " - ", 1)), _cell(d["mean"]),
                         _cell(ci[0]), _cell(ci[1]),
                         _cell(None, "yes" if ci[0] is not None and ci[0] > 0 else
                               ("behind" if ci[1] is not None and ci[1] < 0 else "no"))])
    if rows:
        tables.append({"title": "paired differences of mAP (same queries, paired bootstrap over models)",
                       "note": "a difference is a win only when its whole 95 % CI lies above 0.",
                       "columns": ["head type", "difference", "mean", "CI low", "CI high", "CI above 0"],
                       "rows": rows})
    rows = []
    for model, r in board.get("reconstruction", {}).items():
        if not isinstance(r, dict) or "universal_over_positional" not in r:
            continue
        rows.append([_cell(model, model + (" (control)" if r.get("control") else "")),
                     _cell(r.get("universal_over_positional")), _cell(r.get("cloner_over_positional")),
                     _cell(r.get("universal_over_cloner"))])
    if rows:
        tables.append({"title": "reconstruction on held-out prompts (KL ratios, lower is better)",
                       "note": "held-out KL of the predictor divided by the KL of the head's own mean positional "
                               "pattern (1 = no better than position alone) or of the per-head cloners.",
                       "columns": ["model", "universal / positional", "cloner / positional", "universal / cloner"],
                       "rows": rows})
    return tables


def _pick_prompts(data, n: int, sizes: dict[str, int]) -> list[int]:
    """Indices of the shortest held-out prose and repeat prompts, alternating, ``n`` in all."""
    by_kind: dict[str, list[int]] = {}
    for i, (pid, kind) in enumerate(zip(data.prompt_ids, data.kinds)):
        by_kind.setdefault(kind, []).append(i)
    for v in by_kind.values():
        v.sort(key=lambda i: (sizes[data.prompt_ids[i]], data.prompt_ids[i]))
    order = [k for k in ("prose", "repeat") if k in by_kind]
    picks: list[int] = []
    while len(picks) < n and any(by_kind[k] for k in order):
        for k in order:
            if by_kind[k] and len(picks) < n:
                picks.append(by_kind[k].pop(0))
    return picks


def _q(A: torch.Tensor) -> str:
    """``(..., S, S + 1)`` probabilities as base64 of uint8 (value * 255, rounded)."""
    return base64.b64encode((A.clamp(0, 1) * 255).round().to(torch.uint8).numpy().tobytes()).decode()


def attention_examples(params: Params, root: str = ".", show: bool = True) -> dict[str, dict]:
    """Per model: true, cloner and universal attention of every head on a few held-out prompts.

    Returns:
        ``{model: {"n_heads": H, "prompts": [{"id", "kind", "words": [...], "S": s,
        "true"|"cloner"|"universal": base64 of (H, s, s + 1) uint8}]}}`` (row ``layer * n_heads + head``).
    """
    ep = params.explore
    segments = read_parquet(f"{root}/data/corpus/segments.parquet")
    words = {pid: g.sort_values("seg")["text"].tolist() for pid, g in segments.groupby("prompt_id")}
    keys = list(params.models)
    embed = {k: load_split_data(k, params, root, params.embed) for k in progress(keys, "explorer: data", enabled=show)}
    enc = load_universal(f"{root}/models/universal.safetensors", {k: embed[k].train for k in keys}, params.embed)
    out = {}
    for k in progress(keys, "explorer: attention", enabled=show):
        same = (params.clone.feature_dims, params.clone.position_dims) == (params.embed.feature_dims,
                                                                           params.embed.position_dims)
        sd = embed[k] if same else load_split_data(k, params, root, params.clone)
        cloner = load_cloner(f"{root}/models/cloners/{k}.safetensors", sd.train, params.clone)
        picks = _pick_prompts(sd.heldout, ep.prompts, {p: len(w) for p, w in words.items()})
        H = sd.heldout.A[0].shape[0]
        prompts = []
        for i in picks:
            pid = sd.heldout.prompt_ids[i]
            s = min(ep.max_segments, sd.heldout.A[i].shape[1])
            j = embed[k].heldout.prompt_ids.index(pid)
            shown = {
                "true": sd.heldout.A[i],
                "cloner": predict_attention(cloner, sd.heldout, i),
                "universal": predict_attention(lambda b, k=k: enc(k, b), embed[k].heldout, j),
            }
            prompts.append({"id": pid, "kind": sd.heldout.kinds[i], "words": words[pid][:s], "S": s,
                            **{name: _q(A[:, :s, :s + 1]) for name, A in shown.items()}})
        out[k] = {"n_heads": H, "prompts": prompts}
    return out


def _write_js(path: Path, var: str, obj) -> None:
    path.write_text(f"{var} = {json.dumps(obj, separators=(',', ':'), allow_nan=False)};\n", encoding="utf-8")


def _vendor(name: str) -> str:
    """A vendored script (attendome/explore/vendor, see its README), without its source-map comment
    (the map file is not shipped; a browser's developer tools would ask for it)."""
    text = resources.files("attendome.explore").joinpath("vendor", name).read_text(encoding="utf-8")
    return re.sub(r"//# sourceMappingURL=\S+\s*$", "", text)


def dvc_plots_template() -> str:
    """An HTML template for ``dvc plots show --html-template`` with Vega, Vega-Lite and Vega-Embed
    inlined (the versions DVC's own template loads from a CDN), so that the interactive plots render
    offline. DVC fills ``{plot_divs}``; its ``{scripts}`` (the CDN tags) is left out on purpose."""
    scripts = "\n".join(f"<script>\n{_vendor(n)}\n</script>" for n in VENDOR)
    return ("<!DOCTYPE html>\n<html>\n<head>\n<meta charset=\"utf-8\">\n<title>DVC plots (offline)</title>\n"
            f"{scripts}\n<style>table {{border-spacing: 15px;}}</style>\n</head>\n<body>\n{{plot_divs}}\n"
            "</body>\n</html>\n")


def build_explorer(params: Params, root: str = ".", out: str = "reports/explorer", progress: bool = True) -> dict:
    """Write the explorer site and the paper figures (see module docstring); returns a summary.

    The site is built in a temporary folder beside ``out`` and moved into place at the end, so an
    interrupted run leaves the previous site (or none), never half of one.
    """
    meta = head_table(params, root)
    methods = list(params.explore.methods)
    coords = {m: map_coordinates(params, meta, m, root) for m in methods}
    outl = _outlier_scores(params, meta, root)
    flagged = read_parquet(f"{root}/data/outliers.parquet")
    flag = {(r.method, r.model, r.layer, r.head) for r in flagged.itertuples(index=False)}
    scores = _scores(root, meta)
    nearest = _nearest(root, meta)
    board = read_json(f"{root}/metrics/leaderboard.json")
    types = sorted({t for s in scores for t in s})
    heads = []
    for i, r in enumerate(meta.itertuples(index=False)):
        heads.append({
            "model": r.model, "layer": int(r.layer), "head": int(r.head), "kv": int(r.kv),
            "family": r.family, "control": bool(r.control), "type": r.primary,
            "scores": scores[i],
            "outlier": {p: [_r(outl[p].ratio.iloc[i]), _r(outl[p].score.iloc[i], 2),
                            (p, r.model, r.layer, r.head) in flag] for p in outl},
            "nearest": nearest[i],
        })
    models = []
    for k in params.models:
        g = meta[meta.model == k]
        models.append({"key": k, "n_layers": int(g.layer.max()) + 1, "n_heads": int(g["head"].max()) + 1,
                       "control": bool(params.is_control(k)), "family": params.family(k)})
    data = {
        "models": models,
        "types": types,
        "methods": methods,
        "method_notes": {m: METHODS[m].description for m in methods if m in METHODS},
        "heads": heads,
        "map": {m: [[_r(x, 4), _r(y, 4)] for x, y in coords[m]] for m in methods},
        "leaderboard": leaderboard_tables(board),
        "positive_labels": list(params.leaderboard.positive_labels),
        "explore": params.explore.model_dump(),
    }
    examples = attention_examples(params, root, show=progress)
    final = Path(root) / out
    tmp = atomic_dir(final)  # .<name>.<random> beside it; leftovers of a killed earlier build removed
    tmp.chmod(0o755)  # mkdtemp makes it private; the site is for everyone who can read the repository
    try:
        (tmp / "attn").mkdir()
        for name in SITE_FILES:
            (tmp / name).write_bytes(resources.files("attendome.explore").joinpath("assets", name).read_bytes())
        figs = paper_figures(params, meta, coords, root, tmp / "figures")
        _write_js(tmp / "data.js", "window.ATTENDOME", {**data, "figures": figs})
        for k, ex in examples.items():
            _write_js(tmp / "attn" / f"{k}.js", f"window.ATTENDOME_ATTN[{json.dumps(k)}]", ex)
        (tmp / "dvc-plots-template.html").write_text(dvc_plots_template(), encoding="utf-8")
        data_files = sorted(p.relative_to(tmp).as_posix() for p in tmp.rglob("*") if p.is_file())
        old = final.with_name(f".{final.name}.old")
        if final.exists():
            shutil.rmtree(old, ignore_errors=True)
            final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException as err:
        full = disk_full_error(err, final, tmp) if no_space(err) else None  # measured before removal
        shutil.rmtree(tmp, ignore_errors=True)
        if full is not None:
            raise full from None
        raise
    return {"heads": len(heads), "models": len(models), "methods": methods, "figures": figs, "files": len(data_files)}
