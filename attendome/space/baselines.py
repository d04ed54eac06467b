"""Baseline head embeddings, each in the embedding-table format (``model, layer, head, seed, e_*``).

* ``random``: i.i.d. standard normal vectors of ``embed.dim`` numbers, one draw per replicate
  (``embed.n_seeds``): what chance looks like.
* ``scores``: the head's atlas score vector, one column ``e_<head type>`` per type, each z-scored over
  all heads, undefined scores (NaN) set to 0 (the mean). The leaderboard drops, for each queried
  type, that type's column and the columns of the same mechanism (``leaderboard.mechanisms``), so
  the labels are never read back from their own scores.
* ``rsa``: representational similarity analysis (Kriegeskorte et al. 2008) on the *training*
  prompts (the prompts the learned methods see). For each prompt, a head's representational
  dissimilarity matrix over segments is ``1 - cos`` between its segment attention rows; the upper
  triangles of all training prompts, concatenated, are the head's RSA vector, centred and
  normalised (so dot products are Pearson correlations). The embedding is the first ``dim``
  principal components over all heads, computed exactly from the heads x heads correlation matrix
  (kernel PCA), so the concatenated vectors are never held in memory. Segments are shared by every
  model, so this is tokenizer-agnostic.
* ``cloner``: each Phase 1 cloner replicate, summarised by its invariants (the bilinear form
  ``Q_h K_h^T``, the sink weights, the relative-position bias and the token-count weight),
  standardised per column over all heads and projected on the first ``dim`` principal components.

PCA is unsupervised and never sees labels, so no head-type information leaks into any baseline.
The leaderboard then applies the same centring and dimensionality to every method's table.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from attendome.core.linalg import pca

__all__ = [
    "depth_features",
    "depth_embeddings",
    "attention_stats",
    "depth_stats_embeddings",
    "table",
    "random_embeddings",
    "score_embeddings",
    "rsa_gram",
    "gram_pca",
    "cloner_embeddings",
]


def table(index: pd.DataFrame, E: np.ndarray, seed: int = 0, columns: list[str] | None = None) -> pd.DataFrame:
    """Embedding table from an index (``model, layer, head``) and ``(N, d)`` vectors."""
    out = index[["model", "layer", "head"]].reset_index(drop=True).copy()
    out["seed"] = seed
    cols = pd.DataFrame(np.asarray(E, dtype=float), columns=columns or [f"e_{k}" for k in range(E.shape[1])])
    return pd.concat([out, cols], axis=1)


def random_embeddings(index: pd.DataFrame, dim: int, seed: int, n_seeds: int) -> pd.DataFrame:
    """``n_seeds`` replicates of standard normal embeddings (replicate r drawn with seed ``seed + r``)."""
    return pd.concat(
        [table(index, np.random.default_rng(seed + r).standard_normal((len(index), dim)), r) for r in range(n_seeds)],
        ignore_index=True,
    )


def score_embeddings(atlas: pd.DataFrame, index: pd.DataFrame) -> pd.DataFrame:
    """z-scored atlas scores, one column ``e_<head type>`` per type (NaN -> 0)."""
    wide = atlas.pivot_table(index=["model", "layer", "head"], columns="score_name", values="value", dropna=False)
    wide = wide.reindex(pd.MultiIndex.from_frame(index[["model", "layer", "head"]]))
    z = (wide - wide.mean()) / wide.std().replace(0, 1)
    return table(index, z.fillna(0.0).to_numpy(), 0, [f"e_{c}" for c in wide.columns])


DEPTH_CENTRES = np.linspace(0.0, 1.0, 8)
DEPTH_WIDTH = 1.0 / 8


def depth_features(depth: np.ndarray) -> np.ndarray:
    """``(N, 8)`` relative depth coded by Gaussian bumps (centres 0, 1/7, ..., 1; width 1/8), so that
    the cosine similarity of two heads falls with the distance of their depths (a single number
    would make cosine similarity a sign after centring)."""
    d = np.asarray(depth, dtype=float)[:, None]
    return np.exp(-0.5 * ((d - DEPTH_CENTRES[None]) / DEPTH_WIDTH) ** 2)


def depth_embeddings(index: pd.DataFrame, n_layers: dict[str, int]) -> pd.DataFrame:
    """Trivial baseline ``depth``: a head's relative depth ``layer / (n_layers - 1)`` in [0, 1] alone
    (:func:`depth_features`). What any learned space must beat: heads of one type sit at typical depths."""
    depth = np.array([r.layer / max(n_layers[r.model] - 1, 1) for r in index.itertuples()])
    return table(index, depth_features(depth), 0, [f"e_depth{k}" for k in range(len(DEPTH_CENTRES))])


def attention_stats(maps: list[dict[str, torch.Tensor]], prompt_ids: list[str]) -> np.ndarray:
    """``(N, 3)`` per head, over the training prompts: mean sink mass (column 0), mean mass on the
    previous segment (rows I >= 1) and mean row entropy (nats) of its segment attention."""
    out = []
    for m in maps:
        sink = prev = ent = 0.0
        rows = prev_rows = 0
        for pid in prompt_ids:
            a = m[pid].float()  # (H, S, S + 1)
            S = a.shape[1]
            sink = sink + a[:, :, 0].sum(1)
            idx = torch.arange(1, S)
            prev = prev + a[:, idx, idx].sum(1)  # column 1 + (I - 1) = I
            ent = ent - torch.xlogy(a, a).sum(-1).sum(1)
            rows += S
            prev_rows += S - 1
        out.append(torch.stack([sink / rows, prev / max(prev_rows, 1), ent / rows], dim=1).double().numpy())
    return np.concatenate(out)


def depth_stats_embeddings(index: pd.DataFrame, n_layers: dict[str, int], stats: np.ndarray) -> pd.DataFrame:
    """Trivial baseline ``depth_stats``: :func:`depth_embeddings` plus three z-scored summary statistics
    of each head's training attention (:func:`attention_stats`: sink mass, previous-segment mass,
    entropy). The bar a learned space must clear to show it knows more than a head's coarse habits."""
    depth = depth_embeddings(index, n_layers)
    z = (stats - stats.mean(0)) / np.where(stats.std(0) > 0, stats.std(0), 1.0)
    for k, name in enumerate(("sink", "previous", "entropy")):
        depth[f"e_{name}"] = z[:, k]
    return depth


def _rdm_rows(a: torch.Tensor) -> torch.Tensor:
    """``(H, S*(S-1)/2)`` upper triangle of ``1 - cos`` between each head's attention rows.

    Args:
        a: ``(H, S, S + 1)`` one prompt's segment attention.
    """
    a = a.float()
    a = a / a.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    sim = a @ a.transpose(-1, -2)  # (H, S, S)
    iu = torch.triu_indices(sim.shape[1], sim.shape[1], offset=1)
    return 1 - sim[:, iu[0], iu[1]]


def rsa_gram(maps: list[dict[str, torch.Tensor]], prompt_ids: list[str]) -> np.ndarray:
    """``(N, N)`` Pearson correlations between the heads' concatenated RDM vectors.

    Args:
        maps: per model ``{prompt_id: (H_m, S, S + 1)}``; heads are stacked in model order.
        prompt_ids: the prompts to use (the training split).
    """
    G = None
    s = None
    F = 0
    for pid in prompt_ids:
        V = torch.cat([_rdm_rows(m[pid]) for m in maps]).double()  # (N, F_p)
        G = V @ V.T if G is None else G + V @ V.T
        s = V.sum(1) if s is None else s + V.sum(1)
        F += V.shape[1]
    mean = s / F
    C = G - F * torch.outer(mean, mean)  # centred dot products
    d = torch.sqrt(torch.clamp(torch.diag(C), min=1e-24))
    return (C / torch.outer(d, d)).numpy()


def gram_pca(C: np.ndarray, dim: int) -> np.ndarray:
    """PCA scores from a Gram matrix of (already normalised) vectors: kernel PCA with double centring."""
    N = C.shape[0]
    J = np.eye(N) - 1.0 / N
    K = J @ C @ J
    w, U = np.linalg.eigh((K + K.T) / 2)
    order = np.argsort(w)[::-1][:dim]
    w, U = np.clip(w[order], 0, None), U[:, order]
    signs = np.sign(U[np.abs(U).argmax(0), np.arange(U.shape[1])])
    signs[signs == 0] = 1
    return U * signs * np.sqrt(w)


def cloner_embeddings(per_model: dict[str, np.ndarray], index: pd.DataFrame, dim: int, seed: int) -> pd.DataFrame:
    """Standardised cloner invariants of one replicate, projected on ``dim`` principal components."""
    X = np.concatenate([per_model[m] for m in index["model"].drop_duplicates()], axis=0)
    X = (X - X.mean(0)) / np.where(X.std(0) > 0, X.std(0), 1.0)
    return table(index, pca(X, dim), seed)
