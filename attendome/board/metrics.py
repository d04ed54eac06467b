"""Leaderboard metrics for head embeddings (pure functions of arrays; no I/O).

A *pool* is the set of heads a metric may look at: for head type ``t``, every head of a
non-control model whose atlas label for ``t`` is defined (heads with label ``n/a``, e.g. induction
in a bidirectional encoder, are excluded, never counted as negatives). A head is *positive* for
``t`` when its label is one of ``leaderboard.positive_labels`` (high, medium by default).

**Type retrieval** (one row per query head and scope): each positive head ``q`` of model ``A`` is
a query; the candidates are the pool heads of other models (scope ``all``), or only of models of
another family (``cross_family``) or of the same family (``same_family``, e.g. two sizes of one
model line). Candidates are ranked by cosine similarity to ``q`` (ties broken by pool order). With
``N`` candidates of which ``P`` are positive:

* ``precision@k`` = positives among the top k / k. [0, 1], higher is better; its ceiling is
  ``min(P, k) / k``; chance ``P / N``.
* ``recall@k`` = positives among the top k / P. [0, 1], higher is better; chance ``min(k, N) / N``.
* ``hit@k`` = 1 if any of the top k is positive; chance ``1 - C(N - P, k) / C(N, k)``.
* ``AP`` (average precision) = mean of precision@r over the ranks r of the P positives. [0, 1],
  higher is better; chance = its exact expectation under a random ranking,
  ``(H_N + (P - 1) / (N - 1) * (N - H_N)) / N`` with ``H_N`` the N-th harmonic number
  (:func:`expected_ap`). mAP is the mean AP over queries.

Queries are not independent: the queries of one model share that model's embedding quirks. The
95 % CI is therefore given twice: bootstrap over query heads (``ci95``), and a two-level bootstrap
that resamples models and then queries within each drawn model (``ci95_by_model``, wider and more
honest when few models contribute queries). The permutation null shuffles the positive labels among
each model's pool heads (queries fixed) and recomputes mAP.

**Classification** (:func:`lomo_classification`): logistic regression on standardised embeddings,
positive vs not, leave-one-model-out: the scaler and the classifier are fitted on the other models'
pool heads only, so no model is ever in both training and test. Reported: F1 over all held-out
predictions at the classifier's 0.5 threshold (with balanced class weights), and average precision
per held-out model (threshold-free; chance = that model's positive share), both beside a
permutation null (labels shuffled within each model, the whole procedure repeated).

**Outliers** (:func:`flag_outliers`): a head's outlier score is ``log(KL_method / KL_positional)``
on held-out prompts, where ``KL_positional`` is the KL of the head's own mean positional pattern
(how much better than its own positional habit the method predicts it). Within each model, a head is
flagged "non-embeddable" when the robust z-score of that log ratio exceeds the threshold *and* the
method does worse than the positional pattern (ratio > ``min_ratio``), so a model whose heads are
all predicted well gets no flags just because a z cutoff always finds a tail.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import pandas as pd

from attendome.board.records import ScopeSummary

__all__ = ["cosine_matrix", "hit_chance", "expected_ap", "ranking_metrics", "retrieval_queries",
           "summarise_queries", "bootstrap_ci", "permutation_null_map", "lomo_classification",
           "flag_outliers", "correspondence", "SCOPES"]

SCOPES = ("all", "cross_family", "same_family")


def cosine_matrix(X: np.ndarray) -> np.ndarray:
    """``(N, N)`` cosine similarities of the rows of ``X`` (a zero row has similarity 0 to all)."""
    X = np.asarray(X, dtype=np.float64)
    n = np.linalg.norm(X, axis=1, keepdims=True)
    Xn = X / np.where(n == 0, 1, n)
    return Xn @ Xn.T


def hit_chance(n: int, p: int, k: int) -> float:
    """Probability that a random k-subset of n candidates with p positives holds at least one."""
    k = min(k, n)
    if p == 0:
        return 0.0
    if n - p < k:
        return 1.0
    return 1.0 - math.exp(math.lgamma(n - p + 1) - math.lgamma(n - p - k + 1) - math.lgamma(n + 1)
                          + math.lgamma(n - k + 1))


def expected_ap(n: int, p: int) -> float:
    """Exact expected average precision of a uniformly random ranking of n items with p positives.

    ``E[AP] = (1/P) sum_r P(pos at r) E[prec@r | pos at r] = (1/N) sum_r [1/r + (r-1)/r (P-1)/(N-1)]``.
    """
    if p == 0 or n == 0:
        return float("nan")
    if n == 1:
        return 1.0
    h = float(np.sum(1.0 / np.arange(1, n + 1)))
    return (h + (p - 1) / (n - 1) * (n - h)) / n


def ranking_metrics(ranked_labels: np.ndarray, ks: Sequence[int]) -> dict:
    """Metrics of one ranking.

    Args:
        ranked_labels: ``(N,)`` bool, the candidates' labels in ranked order (best first).
        ks: cut-offs.

    Returns:
        ``{"n", "p", "ap", "ap_chance", "precision@k", "precision@k_chance", "recall@k",
        "recall@k_chance", "hit@k", "hit@k_chance", ...}``; AP is NaN when there is no positive.
    """
    y = np.asarray(ranked_labels, dtype=bool)
    n, p = len(y), int(y.sum())
    hits = np.cumsum(y)
    ranks = np.flatnonzero(y) + 1  # 1-based ranks of the positives
    out = {"n": n, "p": p,
           "ap": float(np.mean(hits[ranks - 1] / ranks)) if p else float("nan"),
           "ap_chance": expected_ap(n, p)}
    for k in ks:
        kk = min(k, n)
        top = int(hits[kk - 1]) if kk else 0
        out[f"precision@{k}"] = top / k
        out[f"precision@{k}_chance"] = p / n if n else float("nan")
        out[f"recall@{k}"] = top / p if p else float("nan")
        out[f"recall@{k}_chance"] = kk / n if n and p else float("nan")
        out[f"hit@{k}"] = float(top > 0)
        out[f"hit@{k}_chance"] = hit_chance(n, p, k)
    return out


def _scope_mask(scope: str, model: np.ndarray, family: np.ndarray, i: int) -> np.ndarray:
    other = model != model[i]
    if scope == "all":
        return other
    if scope == "cross_family":
        return other & (family != family[i])
    if scope == "same_family":
        return other & (family == family[i])
    raise ValueError(f"unknown scope {scope!r}; available: {SCOPES}")


def retrieval_queries(X: np.ndarray, model: np.ndarray, family: np.ndarray, labels: np.ndarray,
                      ks: Sequence[int], scopes: Sequence[str] = SCOPES) -> pd.DataFrame:
    """Per-query type-retrieval metrics (see module docstring) over one pool.

    Args:
        X: ``(N, d)`` embeddings of the pool heads.
        model, family: ``(N,)`` model key and family of each head.
        labels: ``(N,)`` True for positives of the head type.
        ks: cut-offs.
        scopes: which candidate sets to report (a scope with no candidate, or no positive
            candidate, for a query is skipped for that query).

    Returns:
        One row per (query, scope): ``query`` (index into the pool), ``scope`` and the fields of
        :func:`ranking_metrics`.
    """
    sim = cosine_matrix(X)
    model, family = np.asarray(model), np.asarray(family)
    labels = np.asarray(labels, dtype=bool)
    rows = []
    for i in np.flatnonzero(labels):
        for scope in scopes:
            cand = np.flatnonzero(_scope_mask(scope, model, family, i))
            if len(cand) == 0 or not labels[cand].any():
                continue
            order = cand[np.argsort(-sim[i, cand], kind="stable")]
            rows.append({"query": int(i), "scope": scope, **ranking_metrics(labels[order], ks)})
    return pd.DataFrame(rows)


def bootstrap_ci(values: np.ndarray, groups: np.ndarray | None = None, n_boot: int = 2000,
                 seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean of ``values``.

    With ``groups`` (e.g. the model of each query) the bootstrap has two levels: groups are
    resampled with replacement, then values within each drawn group (independently for every draw
    of a group). NaNs are dropped. Vectorised over resamples.
    """
    v = np.asarray(values, dtype=float)
    ok = ~np.isnan(v)
    v = v[ok]
    if len(v) == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    if groups is None:
        means = v[rng.integers(0, len(v), size=(n_boot, len(v)))].mean(1)
    else:
        g = np.asarray(groups)[ok]
        members = [v[g == u] for u in np.unique(g)]
        G = len(members)
        # sums[k, b, j]: a within-group resample of group k, for slot j of resample b
        sums = np.stack([m[rng.integers(0, len(m), size=(n_boot, G, len(m)))].sum(-1) for m in members])
        sizes = np.array([len(m) for m in members], dtype=float)
        pick = rng.integers(0, G, size=(n_boot, G))  # which group fills each slot
        b, j = np.meshgrid(np.arange(n_boot), np.arange(G), indexing="ij")
        means = sums[pick, b, j].sum(1) / sizes[pick].sum(1)
    a = (1 - level) / 2
    return float(np.quantile(means, a)), float(np.quantile(means, 1 - a))


def ratio_ci(num: np.ndarray, den: np.ndarray, n_boot: int = 2000, seed: int = 0,
             level: float = 0.95) -> tuple[float, float]:
    """Paired percentile bootstrap CI of ``sum(num) / sum(den)`` (a ratio of means over the same items).

    The items (e.g. heads, with ``num`` the universal encoder's and ``den`` the cloners' held-out KL of
    each head) are resampled with replacement, the pair of values of an item together, so the CI of
    "universal / cloner" carries the correlation between the two methods on one head. Items with a
    NaN in either array are dropped. Range: the ratio's own (> 0 for KLs); 1 = equal.
    """
    a, b = np.asarray(num, dtype=float), np.asarray(den, dtype=float)
    ok = ~(np.isnan(a) | np.isnan(b))
    a, b = a[ok], b[ok]
    if len(a) == 0:
        return float("nan"), float("nan")
    idx = np.random.default_rng(seed).integers(0, len(a), size=(n_boot, len(a)))
    r = a[idx].sum(1) / b[idx].sum(1)
    q = (1 - level) / 2
    return float(np.quantile(r, q)), float(np.quantile(r, 1 - q))


def permutation_null_map(X: np.ndarray, model: np.ndarray, labels: np.ndarray, n_perm: int,
                         seed: int = 0) -> np.ndarray:
    """mAP (scope ``all``) under ``n_perm`` permutations of the labels within each model.

    The queries stay the true positives; only the candidates' labels are shuffled (per model, so
    each model keeps its number of positives). Each query's ranking is fixed, so it is computed
    once and every permutation only gathers labels along it (vectorised over permutations).

    Returns:
        ``(n_perm,)`` null mAP values.
    """
    sim = cosine_matrix(X)
    model = np.asarray(model)
    labels = np.asarray(labels, dtype=bool)
    rng = np.random.default_rng(seed)
    perms = np.tile(labels, (n_perm, 1))  # (n_perm, N)
    for m in np.unique(model):
        idx = np.flatnonzero(model == m)
        perms[:, idx] = labels[idx][rng.permuted(np.tile(np.arange(len(idx)), (n_perm, 1)), axis=1)]
    aps = []
    for i in np.flatnonzero(labels):
        cand = np.flatnonzero(model != model[i])
        order = cand[np.argsort(-sim[i, cand], kind="stable")]
        Y = perms[:, order]  # (n_perm, n_cand) labels in ranked order
        hits = np.cumsum(Y, axis=1)
        ranks = np.arange(1, Y.shape[1] + 1)
        p = Y.sum(1)
        ap = np.where(p > 0, (Y * hits / ranks).sum(1) / np.maximum(p, 1), np.nan)
        aps.append(ap)
    return np.nanmean(np.stack(aps), axis=0) if aps else np.full(n_perm, np.nan)


def summarise_queries(q: pd.DataFrame, qmodel: np.ndarray, ks: Sequence[int], n_boot: int, seed: int
                      ) -> ScopeSummary:
    """Mean, chance and 95 % CIs of each per-query metric of one scope.

    Args:
        q: rows of :func:`retrieval_queries` for one scope.
        qmodel: ``(len(q),)`` model of each query (for the two-level bootstrap).
    """
    out: dict = {"n_queries": int(len(q)), "n_query_models": int(len(np.unique(qmodel)))}  # + one Stat per metric
    names = ["ap"] + [f"{m}@{k}" for k in ks for m in ("precision", "recall", "hit")]
    for name in names:
        v = q[name].to_numpy(dtype=float)
        key = "map" if name == "ap" else name
        out[key] = {"mean": round(float(np.nanmean(v)), 4) if len(v) else None,
                    "chance": round(float(np.nanmean(q[f"{name}_chance"])), 4) if len(v) else None,
                    "ci95": [round(x, 4) for x in bootstrap_ci(v, None, n_boot, seed)],
                    "ci95_by_model": [round(x, 4) for x in bootstrap_ci(v, qmodel, n_boot, seed)]}
    return out


def lomo_classification(X: np.ndarray, model: np.ndarray, labels: np.ndarray, n_perm: int = 0,
                        seed: int = 0) -> dict:
    """Leave-one-model-out logistic regression (see module docstring).

    A fold whose training part holds a single class predicts that class (probability 0 or 1).

    Returns:
        ``{"f1", "ap_by_model": {model: {"ap", "chance", "n", "n_positive"}}, "mean_ap",
        "null": {"f1": [...], "mean_ap": [...]} (when n_perm > 0), "n", "n_positive"}``.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import average_precision_score, f1_score
    from sklearn.preprocessing import StandardScaler

    X = np.asarray(X, dtype=float)
    model = np.asarray(model)
    y = np.asarray(labels, dtype=int)
    folds = [(m, model == m) for m in np.unique(model)]

    def run(yy: np.ndarray) -> tuple[float, dict]:
        score = np.zeros(len(yy))
        for _, test in folds:
            train = ~test
            if len(np.unique(yy[train])) < 2:
                score[test] = float(yy[train][0]) if train.any() else 0.0
                continue
            sc = StandardScaler().fit(X[train])
            clf = LogisticRegression(max_iter=2000, class_weight="balanced", random_state=seed)
            clf.fit(sc.transform(X[train]), yy[train])
            score[test] = clf.predict_proba(sc.transform(X[test]))[:, 1]
        f1 = float(f1_score(yy, (score >= 0.5).astype(int), zero_division=0))
        aps = {}
        for m, test in folds:
            p = int(yy[test].sum())
            if p == 0:
                continue
            aps[m] = {"ap": float(average_precision_score(yy[test], score[test])), "chance": p / int(test.sum()),
                      "n": int(test.sum()), "n_positive": p}
        return f1, aps

    f1, aps = run(y)
    out = {"f1": round(f1, 4), "ap_by_model": {m: {k: (round(v, 4) if isinstance(v, float) else v)
                                                   for k, v in d.items()} for m, d in aps.items()},
           "mean_ap": round(float(np.mean([d["ap"] for d in aps.values()])), 4) if aps else None,
           "mean_ap_chance": round(float(np.mean([d["chance"] for d in aps.values()])), 4) if aps else None,
           "n": int(len(y)), "n_positive": int(y.sum())}
    if n_perm:
        rng = np.random.default_rng(seed)
        f1s, maps = [], []
        for _ in range(n_perm):
            yy = y.copy()
            for _, test in folds:
                idx = np.flatnonzero(test)
                yy[idx] = y[rng.permutation(idx)]
            pf1, paps = run(yy)
            f1s.append(pf1)
            maps.append(np.mean([d["ap"] for d in paps.values()]) if paps else np.nan)
        out["null"] = {"f1": np.asarray(f1s), "mean_ap": np.asarray(maps)}
    return out


def flag_outliers(ratio: np.ndarray, model: np.ndarray, threshold: float, min_ratio: float = 1.0,
                  rule: str = "robust_z") -> tuple[np.ndarray, np.ndarray]:
    """Flag non-embeddable heads, within each model (see module docstring).

    Args:
        ratio: ``(N,)`` held-out KL of the method divided by the KL of the head's positional pattern.
        model: ``(N,)`` model of each head.
        threshold: robust-z cutoff (``rule='robust_z'``: ``(x - median) / (1.4826 MAD)`` of
            ``x = log ratio`` within the model) or percentile cutoff (``rule='percentile'``, in
            [0, 100], within the model).
        min_ratio: a head is flagged only if its ratio also exceeds this (1.0: worse than its own
            positional pattern).

    Returns:
        ``(score, flagged)``: the within-model robust z (or percentile rank) and the mask.
    """
    x = np.log(np.clip(np.asarray(ratio, dtype=float), 1e-12, None))
    model = np.asarray(model)
    score = np.zeros_like(x)
    flagged = np.zeros(len(x), dtype=bool)
    for m in np.unique(model):
        idx = model == m
        v = x[idx]
        if rule == "robust_z":
            med = np.median(v)
            mad = 1.4826 * np.median(np.abs(v - med))
            s = (v - med) / (mad if mad > 0 else (np.std(v) or 1.0))
            f = s > threshold
        elif rule == "percentile":
            s = 100.0 * (np.argsort(np.argsort(v)) + 0.5) / len(v)
            f = v > np.percentile(v, threshold)
        else:
            raise ValueError(f"unknown outlier rule {rule!r}; available: robust_z, percentile")
        score[idx] = s
        flagged[idx] = f & (np.asarray(ratio)[idx] > min_ratio)
    return score, flagged


def correspondence(X: np.ndarray, model: np.ndarray) -> pd.DataFrame:
    """For every head and every other model: its nearest head there (cosine) and whether they are
    mutual nearest neighbours.

    Returns:
        ``i, other_model, j, similarity, mutual, rank_in_own_model`` with ``i``/``j`` indices into
        ``X``; ``rank_in_own_model`` is the rank (1 = best) of ``i`` among its own model's heads as
        seen from ``j`` (1 exactly when mutual).
    """
    sim = cosine_matrix(X)
    model = np.asarray(model)
    models = list(dict.fromkeys(model))
    idx = {m: np.flatnonzero(model == m) for m in models}
    rows = []
    for a in models:
        for b in models:
            if a == b:
                continue
            S = sim[np.ix_(idx[a], idx[b])]  # (n_a, n_b)
            best_b = S.argmax(1)  # nearest in b of each head of a
            # rank of each head of a among a's heads, from the point of view of its match in b
            order_from_b = np.argsort(-S.T, axis=1, kind="stable")  # (n_b, n_a)
            for ia, jb in enumerate(best_b):
                rank = int(np.flatnonzero(order_from_b[jb] == ia)[0]) + 1
                rows.append({"i": int(idx[a][ia]), "other_model": b, "j": int(idx[b][jb]),
                             "similarity": float(S[ia, jb]), "mutual": rank == 1, "rank_in_own_model": rank})
    return pd.DataFrame(rows)
