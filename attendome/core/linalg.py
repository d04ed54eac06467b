"""Small linear algebra shared by the embedding methods and the leaderboard."""

from __future__ import annotations

import numpy as np

__all__ = ["pca"]


def pca(X: np.ndarray, dim: int) -> np.ndarray:
    """``(N, min(dim, rank))`` principal-component scores of the rows of ``X`` (centred over rows)."""
    X = np.asarray(X, dtype=np.float64)
    Xc = X - X.mean(0, keepdims=True)
    U, S, _ = np.linalg.svd(Xc, full_matrices=False)
    k = min(dim, len(S))
    # a deterministic sign per component (largest |loading| positive), so reruns agree exactly
    signs = np.sign(U[np.abs(U).argmax(0), np.arange(U.shape[1])])
    signs[signs == 0] = 1
    return (U * signs)[:, :k] * S[:k]
