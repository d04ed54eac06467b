"""Leaderboard metrics for head embeddings (all pure functions of arrays).

* **Induction-retrieval@k**: for each induction head of model A (query), rank the heads of all
  *other* models by cosine similarity of embeddings. ``recall@k`` = fraction of the top k that are
  induction heads ([0, 1], higher is better); ``hit@k`` = 1 if at least one is. Averaged over
  queries; the chance level (random ranking of the same candidates) is reported beside each:
  recall chance = share of induction heads among the candidates, hit chance =
  ``1 - C(n - p, k) / C(n, k)``.
* **F1**: logistic regression on (standardised) embeddings, induction vs not, evaluated
  leave-one-model-out: each model's heads are predicted by a classifier trained on the other
  models' heads only; F1 over all predictions ([0, 1], higher is better). Beside it, the same
  procedure on shuffled labels (chance).
* **Outliers**: a head's outlier score is its mean reconstruction error (KL) on held-out prompts;
  heads in the high tail are flagged "non-embeddable": robust z-score ``(x - median) / (1.4826 MAD)``
  above the threshold, or above the threshold-th percentile.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["cosine_matrix", "retrieval_at_k", "lomo_f1", "flag_outliers", "hit_chance"]


def cosine_matrix(X: np.ndarray) -> np.ndarray:
    """``(N, N)`` cosine similarities of the rows of ``X``."""
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
    return 1.0 - math.exp(math.lgamma(n - p + 1) - math.lgamma(n - p - k + 1) - math.lgamma(n + 1) + math.lgamma(n - k + 1))


def retrieval_at_k(X: np.ndarray, models: np.ndarray, labels: np.ndarray, ks) -> dict:
    """Induction-retrieval@k (see module docstring).

    Args:
        X: ``(N, d)`` embeddings.
        models: ``(N,)`` model of each head.
        labels: ``(N,)`` True for induction heads.
        ks: cut-offs.

    Returns:
        ``{"n_queries", "k": {k: {"recall", "recall_chance", "hit", "hit_chance"}}}`` (None values when
        there is no query with another model to search).
    """
    sim = cosine_matrix(np.asarray(X, dtype=float))
    labels = np.asarray(labels, dtype=bool)
    models = np.asarray(models)
    res = {k: {"recall": [], "recall_chance": [], "hit": [], "hit_chance": []} for k in ks}
    for i in np.flatnonzero(labels):
        cand = np.flatnonzero(models != models[i])
        if len(cand) == 0:
            continue
        order = cand[np.argsort(-sim[i, cand], kind="stable")]
        p = int(labels[cand].sum())
        for k in ks:
            top = labels[order[:k]]
            res[k]["recall"].append(top.mean())
            res[k]["hit"].append(float(top.any()))
            res[k]["recall_chance"].append(p / len(cand))
            res[k]["hit_chance"].append(hit_chance(len(cand), p, k))
    n_q = len(res[ks[0]]["recall"]) if ks else 0
    return {"n_queries": n_q,
            "k": {k: {m: (round(float(np.mean(v)), 4) if v else None) for m, v in d.items()} for k, d in res.items()}}


def lomo_f1(X: np.ndarray, models: np.ndarray, labels: np.ndarray, seed: int = 0) -> dict:
    """Leave-one-model-out logistic-regression F1 (and the same on shuffled labels).

    No model is ever in both the training and the test fold; a fold whose training part holds a
    single class predicts that class.

    Returns:
        ``{"f1", "f1_shuffled", "n_positive", "n"}``.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score
    from sklearn.preprocessing import StandardScaler

    X = np.asarray(X, dtype=float)
    models = np.asarray(models)
    y = np.asarray(labels, dtype=int)

    def run(yy: np.ndarray) -> float:
        pred = np.zeros_like(yy)
        for m in np.unique(models):
            test = models == m
            train = ~test
            if len(np.unique(yy[train])) < 2:
                pred[test] = yy[train][0] if train.any() else 0
                continue
            sc = StandardScaler().fit(X[train])
            clf = LogisticRegression(max_iter=2000, class_weight="balanced", random_state=seed)
            clf.fit(sc.transform(X[train]), yy[train])
            pred[test] = clf.predict(sc.transform(X[test]))
        return float(f1_score(yy, pred, zero_division=0))

    rng = np.random.default_rng(seed)
    return {"f1": round(run(y), 4), "f1_shuffled": round(run(rng.permutation(y)), 4),
            "n_positive": int(y.sum()), "n": int(len(y))}


def flag_outliers(errors: np.ndarray, rule: str, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Flag the high tail of per-head errors.

    Returns:
        ``(score, flagged)``: the robust z-score (or percentile rank) of each error, and the mask.
    """
    e = np.asarray(errors, dtype=float)
    if rule == "robust_z":
        med = np.median(e)
        mad = 1.4826 * np.median(np.abs(e - med))
        score = (e - med) / (mad if mad > 0 else (np.std(e) or 1.0))
        return score, score > threshold
    if rule == "percentile":
        score = 100.0 * (np.argsort(np.argsort(e)) + 0.5) / len(e)
        return score, e > np.percentile(e, threshold)
    raise ValueError(f"unknown outlier rule {rule!r}; available: robust_z, percentile")
