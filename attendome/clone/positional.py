"""Positional habits of heads: mean attention by absolute (row, column) position on training prompts,
its low-dimensional basis (the absolute-position bias of the predictors) and the fixed baselines
(``uniform``, ``bos``, ``previous``, ``positional``; defined in :mod:`attendome.clone.evaluate`).
"""

from __future__ import annotations

import torch

from attendome.clone.data import SegmentData


__all__ = ["BASELINES", "mean_positional_pattern", "log_positional", "positional_basis", "project_positional",
           "absolute_bias", "baseline_logprobs"]

BASELINES = ("uniform", "bos", "previous", "positional")


def mean_positional_pattern(train: SegmentData, counts: bool = False):
    """``(H, Smax, Smax + 1)`` mean training attention by absolute (row, column) position.

    With ``counts``, also ``(Smax, Smax + 1)`` the number of training prompts behind each entry.
    """
    Smax = max(z.shape[0] for z in train.Z)
    H = train.A[0].shape[0]
    tot = torch.zeros(H, Smax, Smax + 1)
    cnt = torch.zeros(Smax, Smax + 1)
    for a in train.A:
        S = a.shape[1]
        tot[:, :S, :S + 1] += a
        cnt[:S, :S + 1] += 1
    mean = tot / cnt.clamp_min(1)
    return (mean, cnt) if counts else mean


def log_positional(trains: list[SegmentData], eps: float = 1e-3) -> tuple[torch.Tensor, torch.Tensor]:
    """Row-centred ``log(positional + eps)`` of every head of ``trains`` (stacked, one common size).

    Entries never seen in training, or after the query in a causal model, are 0 (they carry no
    information and every prediction masks them anyway).

    Returns:
        ``(X (H_total, Smax, Smax + 1), seen (Smax, Smax + 1) bool)``.
    """
    Smax = max(max(z.shape[0] for z in t.Z) for t in trains)
    out, seen_all = [], torch.zeros(Smax, Smax + 1, dtype=torch.bool)
    for t in trains:
        pos, cnt = mean_positional_pattern(t, counts=True)
        S = pos.shape[1]
        seen = cnt > 0
        if t.causal:
            seen &= torch.ones(S, S + 1, dtype=torch.bool).tril(1)  # sink + keys J <= I
        lp = torch.log(pos + eps) * seen
        lp = lp - (lp.sum(-1, keepdim=True) / seen.sum(-1, keepdim=True).clamp_min(1)) * seen
        X = torch.zeros(pos.shape[0], Smax, Smax + 1)
        X[:, :S, :S + 1] = lp
        out.append(X)
        seen_all[:S, :S + 1] |= seen
    return torch.cat(out), seen_all


def positional_basis(trains: list[SegmentData], n_components: int, eps: float = 1e-3):
    """Mean and principal components of the heads' log positional patterns (training prompts).

    Args:
        trains: the training data of one model (cloners) or of every model (universal encoder).
        n_components: ``P``, the number of components kept.

    Returns:
        ``(mu (Smax, Smax + 1), basis (P, Smax, Smax + 1), coef (H_total, P))``: ``coef`` are the
        heads' coordinates (projections), the initial value of their absolute-position codes.
    """
    X, _ = log_positional(trains, eps)
    H, Smax, C = X.shape
    flat = X.reshape(H, -1).double()
    mu = flat.mean(0)
    U, S, Vh = torch.linalg.svd(flat - mu, full_matrices=False)
    P = min(n_components, len(S))
    signs = torch.sign(Vh[:P].gather(1, Vh[:P].abs().argmax(1, keepdim=True))).squeeze(1)  # deterministic
    signs[signs == 0] = 1
    basis = (Vh[:P] * signs[:, None]).float().reshape(P, Smax, C)
    coef = ((flat - mu) @ (Vh[:P] * signs[:, None]).T).float()
    return mu.float().reshape(Smax, C), basis, coef


def project_positional(train: SegmentData, mu: torch.Tensor, basis: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """``(H, P)`` coordinates of one model's heads on an existing basis (e.g. a model new to the
    universal encoder), from its own training prompts."""
    X, _ = log_positional([train], eps)
    Smax, C = mu.shape
    Y = torch.zeros(X.shape[0], Smax, C)
    s, c = min(Smax, X.shape[1]), min(C, X.shape[2])
    Y[:, :s, :c] = X[:, :s, :c]
    return ((Y - mu).reshape(len(Y), -1) @ basis.reshape(len(basis), -1).T).float()


def absolute_bias(mu: torch.Tensor, basis: torch.Tensor, coef: torch.Tensor, S: int) -> torch.Tensor:
    """``(H, S, S + 1)`` absolute-position bias ``mu + sum_p coef[:, p] basis[p]``, cropped or 0-padded."""
    table = mu + torch.einsum("hp,pij->hij", coef, basis)  # (H, Smax, Smax + 1)
    s = min(S, table.shape[1])
    out = table.new_zeros(coef.shape[0], S, S + 1)
    out[:, :s, :s + 1] = table[:, :s, :s + 1]
    return out


def baseline_logprobs(name: str, valid: torch.Tensor, H: int, positional: torch.Tensor | None = None) -> torch.Tensor:
    """``(B, H, S, S + 1)`` log-probabilities of a baseline (see module docstring), before smoothing."""
    B, S, C = valid.shape
    if name == "uniform":
        p = valid.float()
    elif name == "bos":
        p = torch.zeros(B, S, C)
        p[..., 0] = 1.0
    elif name == "previous":
        p = torch.zeros(B, S, C)
        p[:, 0, 0] = 1.0
        idx = torch.arange(1, S)
        p[:, idx, idx] = 1.0  # column 1 + (I - 1) = I
    elif name == "positional":
        P = torch.zeros(H, S, C)
        s, c = min(S, positional.shape[1]), min(C, positional.shape[2])
        P[:, :s, :c] = positional[:, :s, :c]
        p = P[None].expand(B, -1, -1, -1) * valid[:, None]
        p = p + (p.sum(-1, keepdim=True) == 0) * valid[:, None].float()  # unseen rows: uniform
        return torch.log(p / p.sum(-1, keepdim=True).clamp_min(1e-12))
    else:
        raise KeyError(f"unknown baseline {name!r}; available: {BASELINES}")
    p = p * valid
    p = p + (p.sum(-1, keepdim=True) == 0) * valid.float()
    return torch.log(p / p.sum(-1, keepdim=True).clamp_min(1e-12))[:, None].expand(-1, H, -1, -1)
