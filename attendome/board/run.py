"""The ``leaderboard`` stage body: score every embedding method against the atlas labels, with
chance levels, confidence intervals, permutation nulls, controls reported apart, reconstruction and
outliers, and the head-correspondence table.

Like for like (every definitional choice is made here once, for every method):

* Every method's table goes through the same transform before any metric: centring (over all
  non-control heads, or per model with ``leaderboard.centering: model``) and projection on its first
  ``embed.dim`` principal components (fitted on the non-control heads; control heads are projected
  with the same map). Cosine similarity is then computed on the transformed vectors.
* ``scores`` leaves out, for each queried head type, that type's column and every column of the same
  mechanism group (``leaderboard.mechanisms``); the other methods never see labels.
* Replicated methods (``universal``, ``cloner``, ``random``) are scored per replicate; per-query
  metrics are averaged over replicates before the bootstrap, and ``seed_sd`` is the spread of the
  aggregate across replicates. Permutation nulls use replicate 0.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from attendome.core.io import read_json, read_parquet, write_json, write_parquet
from attendome.board.records import Board, Classification, Difference, Reconstruction, ScopeSummary
from attendome.core.params import LeaderboardParams, Params
from attendome.prep.store import load_attention_info
from attendome.space.methods import METHODS as REGISTRY
from attendome.board.metrics import (bootstrap_ci, correspondence, cosine_matrix, flag_outliers,
                                     lomo_classification, permutation_null_map, ratio_ci, retrieval_queries, SCOPES,
                                     summarise_queries)

__all__ = ["METHODS", "head_meta", "qualifying_types", "fit_transform", "paired_differences", "method_metrics",
           "run_leaderboard"]

# every embedding method the leaderboard scores, in registry order (attendome.space.methods): learned
# (universal, cloner), a non-learned similarity (rsa), hand-crafted (scores), trivial (depth,
# depth_stats: what a learned space must beat) and chance (random)
METHODS = tuple(REGISTRY)
HEAD = ["model", "layer", "head"]


def _r(x, n=4):
    return None if x is None or (isinstance(x, float) and np.isnan(x)) else round(float(x), n)


def head_meta(params: Params, index: pd.DataFrame, atlas: pd.DataFrame, kv: dict[str, tuple[int, int]] | None = None
              ) -> pd.DataFrame:
    """Per head: ``model, layer, head, family, control, cluster`` and ``label_<type>`` for every atlas type.

    ``cluster`` is the head's (model, layer, KV group): the query heads of one grouped-query group
    share their keys and values and are near-duplicates, so the bootstrap resamples them together.
    ``kv`` gives ``{model: (n_heads, n_kv_heads)}``; without it every head is its own group.
    """
    meta = index[HEAD].reset_index(drop=True).copy()
    meta["family"] = [params.models[m].family or m for m in meta.model]
    meta["control"] = [params.is_control(m) for m in meta.model]
    kv = kv or {}
    meta["cluster"] = [
        f"{r.model}|{r.layer}|{r.head // max(kv.get(r.model, (1, 1))[0] // kv.get(r.model, (1, 1))[1], 1)}"
        for r in meta.itertuples()
    ]
    labels = atlas.pivot_table(index=HEAD, columns="score_name", values="label", aggfunc="first")
    labels = labels.reindex(pd.MultiIndex.from_frame(meta[HEAD])).add_prefix("label_").reset_index(drop=True)
    return pd.concat([meta, labels], axis=1)


def qualifying_types(meta: pd.DataFrame, lp: LeaderboardParams) -> dict[str, dict]:
    """Head types with at least ``min_positives`` positives in at least ``min_models`` non-control models.

    Returns:
        ``{type: {"positives_by_model": {...}, "n_pool": int, "n_positive": int}}``.
    """
    out = {}
    real = meta[~meta.control]
    for col in [c for c in meta.columns if c.startswith("label_")]:
        t = col[len("label_") :]
        lab = real[col].astype("string")
        pool = real[lab.notna() & (lab != "n/a")]
        pos = pool[pool[col].isin(lp.positive_labels)]
        by_model = pos.groupby("model").size().to_dict()
        if sum(v >= lp.min_positives for v in by_model.values()) >= lp.min_models:
            out[t] = {
                "positives_by_model": {k: int(v) for k, v in by_model.items()},
                "n_pool": int(len(pool)),
                "n_positive": int(len(pos)),
                "pool_models": sorted(pool.model.unique()),
            }
    return out


def fit_transform(X: np.ndarray, fit_mask: np.ndarray, model: np.ndarray, dim: int, centering: str) -> np.ndarray:
    """Centre and project every row on the first ``dim`` principal components of the ``fit_mask`` rows."""
    X = np.asarray(X, dtype=np.float64)
    Xc = X.copy()
    if centering == "model":
        for m in np.unique(model):
            sel = model == m
            ref = sel & fit_mask if (sel & fit_mask).any() else sel
            Xc[sel] -= X[ref].mean(0)
    else:
        Xc -= X[fit_mask].mean(0)
    _, S, Vt = np.linalg.svd(Xc[fit_mask], full_matrices=False)
    k = int(min(dim, (S > S.max() * 1e-10).sum() if len(S) else 0))
    V = Vt[:k].T
    signs = np.sign(V[np.abs(V).argmax(0), np.arange(k)])
    signs[signs == 0] = 1
    return Xc @ (V * signs)


def _columns(table: pd.DataFrame, method: str, typ: str, mechanisms) -> list[str]:
    cols = [c for c in table.columns if c.startswith("e_")]
    if not REGISTRY[method].leave_out_mechanism:
        return cols
    group = next((set(g) for g in mechanisms if typ in g), {typ})
    return [c for c in cols if c[len("e_") :] not in group]


def _label_str(row: pd.Series, positive) -> str:
    return ",".join(
        f"{c[len('label_') :]}:{row[c]}" for c in row.index if c.startswith("label_") and row[c] in positive
    )


def _control_share(X: np.ndarray, meta: pd.DataFrame, pool: np.ndarray, y: np.ndarray, ks) -> dict:
    """With control heads added to the candidates as negatives: share of the top k that are controls."""
    ctrl = meta.control.to_numpy()
    if not ctrl.any():
        return {}
    sim = cosine_matrix(X)
    model = meta.model.to_numpy()
    res = {k: [] for k in ks}
    chance = []
    for i in np.flatnonzero(pool & y):
        cand = np.flatnonzero((pool | ctrl) & (model != model[i]))
        order = cand[np.argsort(-sim[i, cand], kind="stable")]
        for k in ks:
            res[k].append(ctrl[order[:k]].mean())
        chance.append(ctrl[cand].mean())
    if not chance:
        return {}
    return {**{f"control_share@{k}": _r(np.mean(v)) for k, v in res.items()}, "chance": _r(np.mean(chance))}


def _score_method(
    method: str, table: pd.DataFrame, meta: pd.DataFrame, types: dict, params: Params, progress: bool
) -> tuple[list[pd.DataFrame], dict]:
    lp = params.leaderboard
    model = meta.model.to_numpy()
    family = meta.family.to_numpy()
    real = ~meta.control.to_numpy()
    queries, cls, nulls, controls = [], {}, {}, {}
    for seed, t in table.groupby("seed", sort=True):
        t = meta[HEAD].merge(t, on=HEAD, how="left")
        for typ in types:
            cols = _columns(t, method, typ, lp.mechanisms)
            lab = meta[f"label_{typ}"].astype("string")
            pool = real & lab.notna().to_numpy() & (lab != "n/a").fillna(False).to_numpy()
            y = meta[f"label_{typ}"].isin(lp.positive_labels).to_numpy() & pool
            X = fit_transform(t[cols].to_numpy(dtype=float), real, model, params.embed.dim, lp.centering)
            q = retrieval_queries(X[pool], model[pool], family[pool], y[pool], lp.ks)
            if len(q):
                heads = meta[pool].reset_index(drop=True)
                q = pd.concat([heads.loc[q["query"], HEAD].reset_index(drop=True), q.drop(columns="query")], axis=1)
                q.insert(0, "method", method)
                q.insert(1, "head_type", typ)
                q.insert(2, "seed", int(seed))
                queries.append(q)
            c = lomo_classification(
                X[pool], model[pool], y[pool], lp.n_permutations_classifier if seed == 0 else 0, lp.seed
            )
            cls.setdefault(typ, []).append(c)
            if seed == 0:
                nulls[typ] = permutation_null_map(X[pool], model[pool], y[pool], lp.n_permutations, lp.seed)
                controls[typ] = _control_share(X, meta, pool, y, lp.ks)
    return queries, {"classification": cls, "nulls": nulls, "controls": controls}


def _aggregate(q: pd.DataFrame, ks, lp: LeaderboardParams, cluster: pd.DataFrame | None = None
               ) -> dict[str, ScopeSummary]:
    """Per scope: summary of per-query metrics averaged over replicates, plus the replicate spread.

    With ``cluster`` (``model, layer, head, cluster``), the mAP also gets a CI from the two-level
    bootstrap over (model, layer, KV group) clusters and the mAP with each cluster's queries
    collapsed into one (``kv_collapsed``: the mean over clusters of their mean AP)."""
    out = {}
    num = [c for c in q.columns if c not in HEAD + ["method", "head_type", "seed", "scope"]]
    for scope in SCOPES:
        s = q[q.scope == scope]
        if s.empty:
            continue
        per_q = s.groupby(HEAD, sort=True)[num].mean().reset_index()
        summ = summarise_queries(per_q, per_q.model.to_numpy(), ks, lp.n_boot, lp.seed)
        if cluster is not None:
            cl = per_q.merge(cluster, on=HEAD, how="left")["cluster"].to_numpy()
            summ["map"]["ci95_by_kv_group"] = [_r(x) for x in bootstrap_ci(per_q.ap.to_numpy(), cl, lp.n_boot, lp.seed)]
            collapsed = per_q.assign(cluster=cl).groupby("cluster")["ap"].mean()
            summ["map"]["kv_collapsed"] = {"mean": _r(collapsed.mean()), "n_groups": int(len(collapsed))}
        seed_means = s.groupby("seed")["ap"].mean()
        summ["map"]["seed_sd"] = _r(seed_means.std(ddof=1)) if len(seed_means) > 1 else None
        summ["map"]["n_seeds"] = int(len(seed_means))
        out[scope] = summ
    return out


def _classification(cls: list[dict]) -> Classification:
    """Mean over replicates of the LOMO classification results; the permutation null of replicate 0."""
    f1 = np.array([c["f1"] for c in cls])
    models = sorted({m for c in cls for m in c["ap_by_model"]})
    ap = {
        m: {
            "ap": _r(np.mean([c["ap_by_model"][m]["ap"] for c in cls if m in c["ap_by_model"]])),
            "chance": _r(cls[0]["ap_by_model"][m]["chance"]) if m in cls[0]["ap_by_model"] else None,
            "n_positive": cls[0]["ap_by_model"].get(m, {}).get("n_positive"),
        }
        for m in models
    }
    mean_ap = np.array([c["mean_ap"] for c in cls if c["mean_ap"] is not None], dtype=float)
    out = {
        "f1": _r(f1.mean()),
        "f1_seed_sd": _r(f1.std(ddof=1)) if len(f1) > 1 else None,
        "mean_ap": _r(mean_ap.mean()) if len(mean_ap) else None,
        "mean_ap_chance": cls[0]["mean_ap_chance"],
        "ap_by_model": ap,
    }
    n0 = cls[0].get("null")
    if n0 is not None and len(n0["f1"]):
        out["null"] = {
            "n_permutations": int(len(n0["f1"])),
            "f1_mean": _r(np.mean(n0["f1"])),
            "f1_p95": _r(np.quantile(n0["f1"], 0.95)),
            "f1_p_value": _r((1 + np.sum(n0["f1"] >= cls[0]["f1"])) / (1 + len(n0["f1"]))),
            "mean_ap_mean": _r(np.nanmean(n0["mean_ap"])),
            "mean_ap_p_value": _r((1 + np.sum(n0["mean_ap"] >= (cls[0]["mean_ap"] or 0))) / (1 + len(n0["mean_ap"]))),
        }
    return out


def _reconstruction(params: Params, errors: pd.DataFrame, clone: pd.DataFrame) -> dict[str, Reconstruction]:
    def means(per: pd.DataFrame, method: str) -> pd.DataFrame:
        sub = per[(per.kind == "all") & (per.metric == "kl")]
        return sub.pivot_table(index=["model", "seed"], columns="method", values="value", aggfunc="mean")

    def per_head(per: pd.DataFrame) -> pd.Series:  # held-out KL of each head, mean over replicates
        sub = per[(per.kind == "all") & (per.metric == "kl") & (per.method == "model")]
        return sub.groupby(["model", "layer", "head"])["value"].mean()

    u, c = means(errors, "model"), means(clone, "model")
    uh, ch = per_head(errors), per_head(clone)
    lp = params.leaderboard
    out = {}
    for m in params.models:
        if m not in u.index.get_level_values(0) or m not in c.index.get_level_values(0):
            continue
        um, cm = u.loc[m], c.loc[m]
        ratio = um["model"].mean() / cm["model"].mean()
        pair = pd.concat([uh.loc[m].rename("u"), ch.loc[m].rename("c")], axis=1, join="inner")
        # paired bootstrap over heads: "sharing pays" (universal / cloner < 1) as a statement with a CI
        lo, hi = ratio_ci(pair.u.to_numpy(), pair.c.to_numpy(), lp.n_boot, lp.seed)
        out[m] = {
            "universal_kl": _r(um["model"].mean(), 5),
            "universal_kl_sd": _r(um["model"].std(ddof=1), 5) if len(um) > 1 else None,
            "cloner_kl": _r(cm["model"].mean(), 5),
            "cloner_kl_sd": _r(cm["model"].std(ddof=1), 5) if len(cm) > 1 else None,
            "positional_kl": _r(cm["positional"].iloc[0], 5),
            "uniform_kl": _r(cm["uniform"].iloc[0], 5),
            "universal_over_cloner": _r(ratio),
            "universal_over_cloner_ci95": [_r(lo), _r(hi)],
            "cloner_over_positional": _r(cm["model"].mean() / cm["positional"].iloc[0]),
            "universal_over_positional": _r(um["model"].mean() / um["positional"].iloc[0]),
            "control": params.is_control(m),
        }
    return out


def _attach_induction_mass(rec: dict[str, Reconstruction], embed: dict, root: str) -> None:
    """Add ``induction_mass`` to each model's reconstruction record: the attention mass the atlas's
    induction heads put on the induction target on held-out repeat probes (the segment after the
    earlier copy of the query), predicted by the universal encoder and the cloners, the true mass and
    the positional baseline's; means over the heads (and replicates), in [0, 1], higher = more
    induction-like. Read from the ``embed`` and ``clone`` summaries; None for a model without
    induction heads or repeat probes."""
    for m, r in rec.items():
        u = embed.get("headline", {}).get("models", {}).get(m, {}).get("induction_mass")
        r["induction_mass"] = None
        if not u:
            continue
        c = read_json(f"{root}/data/clone/{m}.json").get("headline", {}).get("induction_mass") or {}
        r["induction_mass"] = {"n_heads": u["n_heads"], "universal": u["predicted"], "cloner": c.get("predicted"),
                               "true": u["true"], "positional": u["positional"]}


def _outliers(errors: pd.DataFrame, clone: pd.DataFrame, meta: pd.DataFrame, lp: LeaderboardParams
              ) -> tuple[pd.DataFrame, dict]:
    rows, summary = [], {}
    for method, per in (("universal", errors), ("cloner", clone)):
        sub = per[(per.kind == "all") & (per.metric == "kl") & per.method.isin(["model", "positional"])]
        sub = sub.assign(method=sub.method.replace({"model": "predicted"}))  # 'model' is also a column
        w = sub.pivot_table(index=HEAD, columns="method", values="value", aggfunc="mean").reset_index()
        w = meta.merge(w, on=HEAD, how="inner")
        ratio = (w["predicted"] / w["positional"]).to_numpy()
        score, flagged = flag_outliers(
            ratio, w.model.to_numpy(), lp.outlier_threshold, lp.outlier_min_ratio, lp.outlier_rule
        )
        w = w.assign(
            method=method,
            heldout_kl=w["predicted"],
            positional_kl=w["positional"],
            ratio=ratio,
            outlier_score=score,
            flagged=flagged,
            types=[_label_str(r, lp.positive_labels) for _, r in w.iterrows()],
        )
        rows.append(w[w.flagged])
        summary[method] = {
            "n_flagged": int(flagged.sum()),
            "n_heads": int(len(flagged)),
            "by_model": {k: int(v) for k, v in w[w.flagged].groupby("model").size().items()},
            "flagged_with_a_type": int((w[w.flagged].types != "").sum()),
        }
    out = pd.concat(rows, ignore_index=True)
    keep = ["method", *HEAD, "family", "control", "heldout_kl", "positional_kl", "ratio", "outlier_score", "types"]
    keep += [c for c in out.columns if c.startswith("label_")]
    return out[keep].reset_index(drop=True), summary


def _correspondence(tables: dict[str, pd.DataFrame], meta: pd.DataFrame, params: Params) -> tuple[pd.DataFrame, dict]:
    lp = params.leaderboard
    real = ~meta.control.to_numpy()
    m_real = meta[real].reset_index(drop=True)
    types = [_label_str(r, lp.positive_labels) for _, r in m_real.iterrows()]
    frames, summary = [], {}
    n_other = m_real.model.nunique() - 1
    for method, table in tables.items():
        t = meta[HEAD].merge(table[table.seed == table.seed.min()], on=HEAD, how="left")
        cols = [c for c in t.columns if c.startswith("e_")]
        X = fit_transform(t[cols].to_numpy(dtype=float), real, meta.model.to_numpy(), params.embed.dim, lp.centering)
        c = correspondence(X[real], m_real.model.to_numpy())
        a, b = m_real.loc[c.i].reset_index(drop=True), m_real.loc[c.j].reset_index(drop=True)
        frames.append(
            pd.DataFrame(
                {
                    "method": method,
                    "model": a.model,
                    "layer": a.layer,
                    "head": a["head"],
                    "other_model": b.model,
                    "other_layer": b.layer,
                    "other_head": b["head"],
                    "similarity": c.similarity,
                    "mutual": c.mutual,
                    "rank_in_own_model": c.rank_in_own_model,
                    "types": [types[i] for i in c.i],
                    "other_types": [types[j] for j in c.j],
                }
            )
        )
        per_head = c.groupby("i")["mutual"].agg(["sum", "count"])
        # do mutual pairs share a head type? (both typed; chance: the same over all typed cross pairs)
        tsets = [set(t.split(",")) - {""} for t in types]
        typed = [i for i, t in enumerate(tsets) if t]
        mut = c[c.mutual & c.i.isin(typed) & c.j.isin(typed)]
        agree = float(np.mean([bool(tsets[a] & tsets[b]) for a, b in zip(mut.i, mut.j)])) if len(mut) else None
        tm = m_real.model.to_numpy()
        pairs = [(a, b) for a in typed for b in typed if tm[a] != tm[b]]
        chance = float(np.mean([bool(tsets[a] & tsets[b]) for a, b in pairs])) if pairs else None
        summary[method] = {
            "n_heads": int(len(per_head)),
            "mutual_in_every_other_model": int((per_head["sum"] == n_other).sum()),
            "mutual_in_none": int((per_head["sum"] == 0).sum()),
            "mutual_pairs": int(c.mutual.sum() // 2),
            "mutual_typed_pairs": int(len(mut) // 2),
            "mutual_type_agreement": _r(agree),
            "type_agreement_chance": _r(chance),
        }
    return pd.concat(frames, ignore_index=True), summary


def _curve_csv(board: Board, ks, path: str, head_type: str = "induction") -> None:
    """precision@k of every method for one head type (a DVC data plot; empty columns if not queried)."""
    from attendome.core.io import atomic_path

    rows = []
    for k in ks:
        row = {"k": k}
        for m, per in board["methods"].items():
            e = per.get(head_type, {}).get("all")
            row[m] = e[f"precision@{k}"]["mean"] if e else None
            if e:
                row["chance"] = e[f"precision@{k}"]["chance"]
        rows.append(row)
    with atomic_path(path) as tmp:
        pd.DataFrame(rows).to_csv(tmp, index=False)


def _training(params: Params, root: str, embed: dict) -> dict:
    """Chosen epochs and the largest rise of validation KL above its running minimum (relative), for
    every cloner replicate, universal replicate and transfer fit: the curves' health at a glance."""

    def pack(hist: list[dict]) -> dict:
        return {
            "best_epochs": [h["best_epoch"] for h in hist],
            "epochs_run": [h.get("epochs_run") for h in hist],
            "max_val_rise": _r(max(h.get("max_val_rise") or 0 for h in hist)) if hist else None,
        }

    out = {
        "cloner": {m: pack(read_json(f"{root}/data/clone/{m}.json")["history"]) for m in params.models},
        "universal": pack(embed.get("history", [])),
    }
    if embed.get("transfer"):
        out["transfer"] = {
            "best_epochs": [t["best_epoch"] for t in embed["transfer"]],
            "max_val_rise": _r(max(t.get("max_val_rise") or 0 for t in embed["transfer"])),
        }
    return out


def paired_differences(queries: pd.DataFrame, meta: pd.DataFrame, types, lp: LeaderboardParams,
                       reference: str = "universal") -> dict[str, dict[str, Difference]]:
    """Per head type: mAP of ``reference`` minus that of every other method on the *same* queries
    (scope ``all``, per-query AP averaged over replicates), with paired bootstrap CIs: the per-query
    differences are resampled by model (two levels: models, then queries) and by (model, layer, KV
    group) cluster. "Beats" means the whole CI is above 0.

    Returns:
        ``{type: {"universal-rsa": {mean, ci95_by_model, ci95_by_kv_group, n_queries}, ...}}``.
    """
    out: dict = {}
    q = queries[queries.scope == "all"]
    for typ in types:
        per = q[q.head_type == typ].groupby(["method"] + HEAD)["ap"].mean().unstack("method")
        if reference not in per.columns:
            continue
        cl = meta.set_index(HEAD).loc[per.index, "cluster"].to_numpy()
        model = np.array([i[0] for i in per.index])
        res = {}
        for m in per.columns:
            if m == reference:
                continue
            d = (per[reference] - per[m]).to_numpy(dtype=float)
            res[f"{reference}-{m}"] = {
                "mean": _r(np.nanmean(d)),
                "n_queries": int(np.isfinite(d).sum()),
                "ci95_by_model": [_r(x) for x in bootstrap_ci(d, model, lp.n_boot, lp.seed)],
                "ci95_by_kv_group": [_r(x) for x in bootstrap_ci(d, cl, lp.n_boot, lp.seed)],
            }
        out[typ] = res
    return out


def method_metrics(board: Board) -> dict[str, dict]:
    """The DVC metrics of the leaderboard: per method (one file each, ``metrics/leaderboard/<method>.json``)
    its mAP per head type (scope ``all``), and the chance level per type (``chance.json``). Flat keys
    named after the types, so ``dvc metrics show`` stacks methods as rows of one small table; CIs,
    precision/recall@k, F1 and nulls are in ``metrics/leaderboard.json``."""
    out: dict[str, dict] = {m: {} for m in METHODS}
    out["chance"] = {}
    for t in board["types"]:
        for m, per in board["methods"].items():
            e = per.get(t, {}).get("all")
            out[m][t] = e["map"]["mean"] if e else None
            if e:
                out["chance"][t] = e["map"]["chance"]
    return out


def run_leaderboard(params: Params, root: str = ".", progress: bool = True) -> Board:
    """Score every method (see module docstring); write metrics, per-query table, outliers, plots."""
    from attendome.board.plots import leaderboard_plots

    lp = params.leaderboard
    atlas = read_parquet(f"{root}/data/atlas.parquet")
    tables = {m: read_parquet(f"{root}/data/embeddings/{m}.parquet") for m in METHODS}
    index = tables["universal"].query("seed == 0")[HEAD].reset_index(drop=True)
    kv = {}
    for m in params.models:
        info = load_attention_info(f"{root}/data/attention/{m}.safetensors")
        kv[m] = (info["n_heads"], info.get("n_kv_heads") or info["n_heads"])
    meta = head_meta(params, index, atlas, kv)
    types = qualifying_types(meta, lp)
    board: Board = {
        "types": list(types),
        "families": {m: {"family": params.models[m].family or m, "control": params.is_control(m)}
                     for m in params.models},
        "pools": types,
        "methods": {},
        "atlas_positives": {
            m: {t: int(c) for t, c in g[g.label.isin(lp.positive_labels)].groupby("score_name").size().items()}
            | {
                t: None
                for t in sorted(set(g.score_name[g.label == "n/a"]))
                if (g[g.score_name == t].label == "n/a").all()
            }
            for m, g in atlas[atlas.model.isin(list(params.models))].groupby("model")
        },
    }
    all_q = []
    for method, table in tables.items():
        qs, extra = _score_method(method, table, meta, types, params, progress)
        q = pd.concat(qs, ignore_index=True) if qs else pd.DataFrame()
        all_q.append(q)
        board["methods"][method] = {}
        for typ in types:
            entry = _aggregate(q[q.head_type == typ], lp.ks, lp, meta[HEAD + ["cluster"]]) if len(q) else {}
            null = extra["nulls"].get(typ)
            if "all" in entry and null is not None and len(null):
                s0 = q[(q.head_type == typ) & (q.scope == "all") & (q.seed == q.seed.min())]["ap"].mean()
                entry["all"]["map"]["null"] = {
                    "n_permutations": int(len(null)),
                    "mean": _r(np.nanmean(null)),
                    "p95": _r(np.nanquantile(null, 0.95)),
                    "p_value": _r((1 + np.sum(null >= s0)) / (1 + len(null))),
                }
            entry["classification"] = _classification(extra["classification"][typ])
            if extra["controls"].get(typ):
                entry["controls"] = extra["controls"][typ]
            board["methods"][method][typ] = entry
    queries = pd.concat(all_q, ignore_index=True)
    board["differences"] = paired_differences(queries, meta, types, lp)
    errors = read_parquet(f"{root}/data/embed/errors.parquet")
    clone = pd.concat([read_parquet(f"{root}/data/clone/{k}.parquet") for k in params.models], ignore_index=True)
    board["reconstruction"] = _reconstruction(params, errors, clone)
    embed = read_json(f"{root}/data/embed/summary.json")
    _attach_induction_mass(board["reconstruction"], embed, root)
    if embed.get("headline", {}).get("transfer"):
        board["transfer"] = embed["headline"]["transfer"]
    board["training"] = _training(params, root, embed)
    outliers, board["outliers"] = _outliers(errors, clone, meta, lp)
    corr, board["correspondence"] = _correspondence(tables, meta, params)
    write_parquet(queries, f"{root}/data/leaderboard/queries.parquet")
    _curve_csv(board, lp.ks, f"{root}/data/leaderboard/precision_at_k.csv")
    write_parquet(outliers, f"{root}/data/outliers.parquet")
    write_parquet(corr, f"{root}/data/correspondence.parquet")
    write_json(board, f"{root}/metrics/leaderboard.json")
    for name, values in method_metrics(board).items():
        write_json(values, f"{root}/metrics/leaderboard/{name}.json")
    leaderboard_plots(params, board, tables["universal"], meta, errors, clone, outliers, f"{root}/plots/leaderboard")
    return board
