"""Phase 1 losses and running KL: row-wise KL(A || q) optimised as the cross-entropy (which differs
by the constant entropy of A), averaged over valid rows and heads.

KL: >= 0, lower is better, 0 = perfect.
"""

from __future__ import annotations

import torch

from attendome.clone.data import SegmentData, pad_batch, sorted_batches


__all__ = ["kl_rows", "entropy_sum", "ce_loss", "batch_kl", "EntropyCache", "mean_kl"]


def kl_rows(A: torch.Tensor, logq: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Row-wise KL(A || q): ``(B, H, S)`` (A is 0 wherever ``valid`` is False; padded rows give 0)."""
    logq = logq.masked_fill(~valid[:, None], 0.0)
    return (torch.xlogy(A, A) - A * logq).sum(-1)


def entropy_sum(A: torch.Tensor) -> float:
    """Sum over rows and heads of the entropy of ``A`` (a constant of the targets)."""
    return float(-torch.xlogy(A, A).sum())


def ce_loss(A: torch.Tensor, logq: torch.Tensor, valid: torch.Tensor, row_valid: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of A under q per valid row and head (= mean KL minus the constant entropy of A).

    ``logq`` must be finite (as :func:`bilinear_logprobs` returns it): A is 0 on invalid entries, so
    they add nothing; padded rows of A are all 0.
    """
    ce = -(A * logq).sum(-1)  # (B, H, S), 0 on padded rows
    return ce.sum() / (row_valid.sum() * A.shape[1])


def batch_kl(A: torch.Tensor, logq: torch.Tensor, valid: torch.Tensor, row_valid: torch.Tensor,
             loss: torch.Tensor | None = None, entropy: float | None = None) -> tuple[float, int]:
    """``(sum of row KLs, number of rows x heads)`` of one batch (for running means).

    With the batch's ``loss`` (:func:`ce_loss`) and the targets' ``entropy`` (:func:`entropy_sum`),
    the KL is ``CE - H`` and costs nothing more.
    """
    n = int(row_valid.sum()) * A.shape[1]
    if loss is not None:
        h = entropy_sum(A) if entropy is None else entropy
        return float(loss.detach()) * n - h, n
    kl = kl_rows(A, logq.detach(), valid) * row_valid[:, None]
    return float(kl.sum()), n


class EntropyCache:
    """Target entropies per prompt and head, computed once, so that a batch's KL is its cross-entropy
    minus a looked-up constant (:func:`batch_kl`)."""

    def __init__(self, data: SegmentData):
        self.per = [-torch.xlogy(a, a).sum((1, 2)).double() for a in data.A]  # per prompt: (H,)

    def __call__(self, idx, heads: torch.Tensor | None = None) -> float:
        if heads is None:
            return float(sum(self.per[i].sum() for i in idx))
        return float(sum(self.per[i][heads].sum() for i in idx))


@torch.no_grad()
def mean_kl(predict, data: SegmentData, batch: int, heads: torch.Tensor | None = None) -> float:
    """Mean row KL of ``predict(batch) -> logprobs`` over all (or ``heads``) heads on ``data``."""
    tot, rows = 0.0, 0
    for idx in sorted_batches(data, batch):
        b = pad_batch(data, idx, heads)
        s, n = batch_kl(b.A, predict(b), b.valid, b.row_valid)
        tot, rows = tot + s, rows + n
    return tot / max(rows, 1)
