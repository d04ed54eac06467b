"""Baseline head embeddings, each in the universal table format (``model, layer, head, e_0 ..``).

* ``random``: i.i.d. standard normal vectors (seeded): what chance looks like.
* ``scores``: the head's atlas score vector (one column per head type), each score z-scored over
  all heads, undefined scores (NaN) set to 0 (the mean).
* ``rsa``: representational similarity analysis (Kriegeskorte et al. 2008). For each held-out
  prompt, a head's representational dissimilarity matrix over segments is ``1 - cos`` between its
  segment attention rows; the upper triangles of all held-out prompts are concatenated, centred
  and normalised (so dot products are correlations), and projected on the first ``dim`` principal
  components over all heads. Segments are shared by every model, so this is tokenizer-agnostic.
* ``cloner``: the Phase 1 cloner of each head, summarised by its invariants (the bilinear form
  ``Q_h K_h^T``, the sink weights and the relative-position bias), standardised per column over
  all heads and projected on the first ``dim`` principal components.
PCA is unsupervised and never sees labels, so no head-type information leaks into any baseline.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

__all__ = ["pca", "table", "random_embeddings", "score_embeddings", "rsa_vectors", "rsa_embeddings",
           "cloner_vectors", "cloner_embeddings"]


def pca(X: np.ndarray, dim: int) -> np.ndarray:
    """``(N, min(dim, rank))`` principal-component scores of the rows of ``X``."""
    X = np.asarray(X, dtype=np.float64)
    Xc = X - X.mean(0, keepdims=True)
    U, S, _ = np.linalg.svd(Xc, full_matrices=False)
    k = min(dim, len(S))
    return U[:, :k] * S[:k]


def table(index: pd.DataFrame, E: np.ndarray) -> pd.DataFrame:
    """Embedding table from an index (``model, layer, head``) and ``(N, d)`` vectors."""
    out = index[["model", "layer", "head"]].reset_index(drop=True).copy()
    cols = pd.DataFrame(np.asarray(E, dtype=float), columns=[f"e_{k}" for k in range(E.shape[1])])
    return pd.concat([out, cols], axis=1)


def random_embeddings(index: pd.DataFrame, dim: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return table(index, rng.standard_normal((len(index), dim)))


def score_embeddings(atlas: pd.DataFrame, index: pd.DataFrame) -> pd.DataFrame:
    wide = atlas.pivot_table(index=["model", "layer", "head"], columns="score_name", values="value", dropna=False)
    wide = wide.reindex(pd.MultiIndex.from_frame(index[["model", "layer", "head"]]))
    z = (wide - wide.mean()) / wide.std().replace(0, 1)
    return table(index, z.fillna(0.0).to_numpy())


def rsa_vectors(maps: dict[str, torch.Tensor], prompt_ids: list[str]) -> np.ndarray:
    """``(H, F)`` concatenated upper-triangle RDMs of every head over ``prompt_ids``."""
    parts = []
    for pid in prompt_ids:
        a = maps[pid].float()  # (H, S, S+1)
        a = a / a.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        sim = a @ a.transpose(-1, -2)  # (H, S, S)
        iu = torch.triu_indices(sim.shape[1], sim.shape[1], offset=1)
        parts.append((1 - sim[:, iu[0], iu[1]]).numpy())
    v = np.concatenate(parts, axis=1)
    v = v - v.mean(1, keepdims=True)
    return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)


def rsa_embeddings(per_model: dict[str, np.ndarray], index: pd.DataFrame, dim: int) -> pd.DataFrame:
    X = np.concatenate([per_model[m] for m in index["model"].drop_duplicates()], axis=0)
    return table(index, pca(X, dim))


def cloner_vectors(weights: dict[str, torch.Tensor]) -> np.ndarray:
    """``(H, d*d + d + 2R+1)`` invariants of one model's cloners."""
    Q, K = weights["Q"].double(), weights["K"].double()  # (H, d, r)
    M = (Q @ K.transpose(-1, -2)).flatten(1)  # (H, d*d)
    return torch.cat([M, weights["sink_w"].double(), weights["rel"].double()], dim=1).numpy()


def cloner_embeddings(per_model: dict[str, np.ndarray], index: pd.DataFrame, dim: int) -> pd.DataFrame:
    X = np.concatenate([per_model[m] for m in index["model"].drop_duplicates()], axis=0)
    X = (X - X.mean(0)) / np.where(X.std(0) > 0, X.std(0), 1.0)
    return table(index, pca(X, dim))
