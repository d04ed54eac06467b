"""Phase 1: clone every head's segment attention from frozen encoder features.

Per head ``h`` a low-rank bilinear map over the frozen features ``Z`` (segments x d) of a prompt:

    logits[I, 1 + J] = (Z Q_h)[I] . (Z K_h)[J] / sqrt(r) + p_h[clip(I - J, -R, R)]
    logits[I, 0]     = Z[I] . s_h + b_h                          (learned sink logit, the BOS column)
    A_hat_h = softmax over the valid columns of each row        (keys J <= I for causal targets)

``Z`` is the encoder's segment features, standardised with training statistics and projected on
their first ``feature_dims`` principal components (fitted on training prompts only), concatenated
with fixed sinusoidal features of the segment index (``position_dims``; frozen, not learned).
``p_h`` is a learned relative-position bias over ``R = max_offset`` offsets (T5-style), so purely
positional heads (previous-token, local windows) are expressible without using the features. All
heads of a model are one batched module.

Loss: row-wise KL(A || A_hat) (optimised as the cross-entropy, which differs by the constant
entropy of A), averaged over valid rows and heads. Evaluation on held-out prompts
reports, per head, KL and MSE for the cloner and four baselines on the same rows: uniform over the
valid columns, all mass on the sink (BOS), all mass on the previous segment (the sink for the first
segment), and the head's own mean positional pattern on training prompts. To keep KL finite for
the one-hot baselines, every prediction is smoothed as ``(1 - eps) A_hat + eps * uniform`` with
``eps = 1e-4`` before scoring (the same for all methods).

KL: >= 0, lower is better, 0 = perfect. MSE: mean over valid (I, column) entries of the squared
difference, in [0, 1], lower is better.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

__all__ = ["EPS", "SegmentData", "position_features", "build_data", "pad_batch", "bilinear_logprobs",
           "BilinearCloner", "kl_rows", "train_cloner", "evaluate_heads", "baseline_logprobs", "BASELINES",
           "mean_positional_pattern"]

EPS = 1e-4
BASELINES = ("uniform", "bos", "previous", "positional")


def position_features(S: int, dims: int) -> torch.Tensor:
    """``(S, dims)`` sinusoidal features of segment indices (periods from 2 to ~200 segments)."""
    if dims == 0:
        return torch.zeros(S, 0)
    pos = torch.arange(S, dtype=torch.float32)[:, None]
    freqs = torch.exp(torch.linspace(math.log(math.pi), math.log(2 * math.pi / 200), dims // 2))[None, :]
    return torch.cat([torch.sin(pos * freqs), torch.cos(pos * freqs)], dim=1)


@dataclass
class SegmentData:
    """Inputs and targets of one model on one split.

    Attributes:
        prompt_ids: prompt order.
        Z: per prompt ``(S, d_in)`` standardised features + position features.
        A: per prompt ``(n_heads, S, S + 1)`` float32 targets (rows sum to 1), or None.
        causal: whether the target model is causal (keys J <= I only).
    """

    prompt_ids: list[str]
    Z: list[torch.Tensor]
    A: list[torch.Tensor] | None
    causal: bool

    @property
    def d_in(self) -> int:
        return self.Z[0].shape[1]


def fit_projection(features: dict, train_ids, dims: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Standardisation + PCA on training prompts only: ``(mean (d,), std (d,), proj (d, k))``."""
    X = torch.cat([features[p].float() for p in train_ids])  # (N, d)
    mean, std = X.mean(0), X.std(0).clamp_min(1e-6)
    Xs = (X - mean) / std
    k = min(dims, Xs.shape[1]) if dims > 0 else Xs.shape[1]
    _, _, Vh = torch.linalg.svd(Xs - Xs.mean(0), full_matrices=False)
    proj = Vh[:k].T  # (d, k)
    scale = (Xs @ proj).std(0).clamp_min(1e-6)
    return mean, std, proj / scale  # projected features have unit variance


def build_data(prompt_ids, features: dict, attention: dict | None, mean: torch.Tensor, std: torch.Tensor,
               position_dims: int, causal: bool, proj: torch.Tensor | None = None) -> SegmentData:
    """Assemble :class:`SegmentData` (features standardised/projected with training statistics)."""
    Z, A = [], [] if attention is not None else None
    for pid in prompt_ids:
        f = (features[pid].float() - mean) / std  # (S, d)
        if proj is not None:
            f = f @ proj  # (S, k)
        Z.append(torch.cat([f, position_features(f.shape[0], position_dims)], dim=1))
        if attention is not None:
            a = attention[pid].float()  # (H, S, S+1)
            A.append(a / a.sum(-1, keepdim=True).clamp_min(1e-12))
    return SegmentData(list(prompt_ids), Z, A, causal)


def valid_mask(lengths: list[int], S: int, causal: bool) -> torch.Tensor:
    """``(B, S, S + 1)`` True where (row I, column) is a real entry (sink column always)."""
    idx = torch.arange(S)
    rows = idx[None, :, None] < torch.tensor(lengths)[:, None, None]  # (B, S, 1)
    keys = idx[None, None, :] < torch.tensor(lengths)[:, None, None]  # (B, 1, S)
    if causal:
        keys = keys & (idx[None, None, :] <= idx[None, :, None])  # (B, S, S)
    else:
        keys = keys.expand(-1, S, -1)
    sink = torch.ones(len(lengths), S, 1, dtype=torch.bool)
    return torch.cat([sink, keys], dim=-1) & rows  # (B, S, S+1)


def pad_batch(data: SegmentData, idx, heads: torch.Tensor | None = None):
    """Pad prompts ``idx`` of ``data`` to one length.

    Returns:
        ``Z (B, S, d)``, ``A (B, H, S, S+1)`` or None, ``valid (B, S, S+1)``, ``row_valid (B, S)``.
    """
    lengths = [data.Z[i].shape[0] for i in idx]
    S = max(lengths)
    B = len(idx)
    Z = torch.zeros(B, S, data.d_in)
    A = None
    if data.A is not None:
        H = data.A[idx[0]].shape[0] if heads is None else len(heads)
        A = torch.zeros(B, H, S, S + 1)
    for b, i in enumerate(idx):
        s = lengths[b]
        Z[b, :s] = data.Z[i]
        if A is not None:
            a = data.A[i] if heads is None else data.A[i][heads]
            A[b, :, :s, :s + 1] = a
    valid = valid_mask(lengths, S, data.causal)
    return Z, A, valid, torch.arange(S)[None, :] < torch.tensor(lengths)[:, None]


def offsets(S: int, max_offset: int) -> torch.Tensor:
    """``(S, S)`` bucket index ``clip(I - J, -R, R) + R`` of the relative-position bias."""
    i = torch.arange(S)
    return (i[:, None] - i[None, :]).clamp(-max_offset, max_offset) + max_offset


def bilinear_logprobs(Z: torch.Tensor, Q: torch.Tensor, K: torch.Tensor, sink_w: torch.Tensor,
                      sink_b: torch.Tensor, valid: torch.Tensor, rel: torch.Tensor | None = None) -> torch.Tensor:
    """Log attention of bilinear heads.

    Args:
        Z: ``(B, S, d)`` features.
        Q, K: ``(H, d, r)`` query/key maps.
        sink_w: ``(H, d)``; sink_b: ``(H,)`` sink logit ``Z[I] . s_h + b_h``.
        valid: ``(B, S, S + 1)`` valid entries.
        rel: ``(H, 2R + 1)`` relative-position bias, or None.

    Returns:
        ``(B, H, S, S + 1)`` log-probabilities (-inf on invalid entries; rows with no valid entry are 0).
    """
    r = Q.shape[-1]
    S = Z.shape[1]
    q = torch.einsum("bsd,hdr->bhsr", Z, Q)  # (B, H, S, r)
    k = torch.einsum("bsd,hdr->bhsr", Z, K)  # (B, H, S, r)
    logits = q @ k.transpose(-1, -2) / math.sqrt(r)  # (B, H, S, S)
    if rel is not None:
        R = (rel.shape[1] - 1) // 2
        logits = logits + rel[:, offsets(S, R)][None]  # (1, H, S, S)
    sink = torch.einsum("bsd,hd->bhs", Z, sink_w) + sink_b[None, :, None]  # (B, H, S)
    full = torch.cat([sink.unsqueeze(-1), logits], dim=-1)  # (B, H, S, S+1)
    full = full.masked_fill(~valid[:, None], float("-inf"))
    out = torch.log_softmax(full, dim=-1)
    return torch.nan_to_num(out, nan=0.0, neginf=float("-inf"))


class BilinearCloner(nn.Module):
    """All heads of one model as one batched bilinear module (see module docstring)."""

    def __init__(self, n_heads: int, d_in: int, rank: int, seed: int = 0, max_offset: int = 16):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.Q = nn.Parameter(torch.randn(n_heads, d_in, rank, generator=g) / math.sqrt(d_in))
        self.K = nn.Parameter(torch.randn(n_heads, d_in, rank, generator=g) / math.sqrt(d_in))
        self.sink_w = nn.Parameter(torch.zeros(n_heads, d_in))
        self.sink_b = nn.Parameter(torch.zeros(n_heads))
        self.rel = nn.Parameter(torch.zeros(n_heads, 2 * max_offset + 1))

    def forward(self, Z: torch.Tensor, valid: torch.Tensor, heads: torch.Tensor | None = None) -> torch.Tensor:
        if heads is None:
            return bilinear_logprobs(Z, self.Q, self.K, self.sink_w, self.sink_b, valid, self.rel)
        return bilinear_logprobs(Z, self.Q[heads], self.K[heads], self.sink_w[heads], self.sink_b[heads], valid,
                                 self.rel[heads])


def kl_rows(A: torch.Tensor, logq: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Row-wise KL(A || q): ``(B, H, S)`` (0 on padded rows)."""
    logq = logq.masked_fill(~valid[:, None], 0.0)
    return (torch.xlogy(A, A) - A * logq).sum(-1)


def _loss(A, logq, valid, row_valid):
    """Cross-entropy of A under q per valid row (= KL minus the constant entropy of A)."""
    ce = -(A * logq.masked_fill(~valid[:, None], 0.0)).sum(-1)  # (B, H, S)
    return (ce * row_valid[:, None]).sum() / (row_valid.sum() * A.shape[1])


def sorted_batches(data: SegmentData, batch: int) -> list[list[int]]:
    """Deterministic batches of prompts sorted by length (for evaluation)."""
    order = sorted(range(len(data.Z)), key=lambda i: data.Z[i].shape[0])
    return [order[s:s + batch] for s in range(0, len(order), batch)]


def length_batches(data: SegmentData, batch: int, rng: np.random.Generator) -> list[list[int]]:
    """Batches of prompts of similar length (less padding), in random order."""
    order = sorted(range(len(data.Z)), key=lambda i: (data.Z[i].shape[0], rng.random()))
    batches = [order[s:s + batch] for s in range(0, len(order), batch)]
    return [batches[i] for i in rng.permutation(len(batches))]


def train_cloner(train: SegmentData, heldout: SegmentData, tp, n_heads: int, tracker=None,
                 heads: torch.Tensor | None = None, progress: bool = True, desc: str = "clone") -> tuple[BilinearCloner, list[dict]]:
    """Train one batched cloner for ``n_heads`` heads (or the subset ``heads`` of the targets).

    Args:
        train, heldout: data of the same model.
        tp: :class:`~attendome.core.params.TrainParams`.
        tracker: optional :class:`~attendome.core.tracking.Tracker` (per-epoch losses).

    Returns:
        ``(model, history)``; history has per-epoch ``train_kl`` and ``heldout_kl``.
    """
    torch.manual_seed(tp.seed)
    n = n_heads if heads is None else len(heads)
    model = BilinearCloner(n, train.d_in, tp.rank, tp.seed, tp.max_offset)
    opt = torch.optim.Adam(model.parameters(), lr=tp.lr, weight_decay=tp.weight_decay)
    rng = np.random.default_rng(tp.seed)
    history = []
    bar = tqdm(range(tp.epochs), desc=desc, disable=not progress, unit="epoch")
    for epoch in bar:
        model.train()
        kl_sum, kl_rows_n = 0.0, 0
        for idx in length_batches(train, tp.batch_prompts, rng):
            Z, A, valid, rv = pad_batch(train, idx, heads)
            logq = model(Z, valid)
            loss = _loss(A, logq, valid, rv)
            opt.zero_grad()
            loss.backward()
            opt.step()
            with torch.no_grad():  # running train KL over the epoch (weights change within it)
                kl_sum += float((kl_rows(A, logq.detach(), valid) * rv[:, None]).sum())
                kl_rows_n += int(rv.sum()) * A.shape[1]
        ho = heldout_kl(model, heldout, tp.batch_prompts, heads)
        rec = {"epoch": epoch, "train_kl": kl_sum / max(kl_rows_n, 1), "heldout_kl": ho}
        history.append(rec)
        bar.set_postfix(heldout_kl=f"{ho:.3f}")
        if tracker is not None:
            tracker.log_metrics({"train_kl": rec["train_kl"], "heldout_kl": ho}, step=epoch)
    return model.eval(), history


@torch.no_grad()
def heldout_kl(model, data: SegmentData, batch: int, heads=None) -> float:
    """Mean row KL of ``model`` on ``data``."""
    tot, rows = 0.0, 0
    for idx in sorted_batches(data, batch):
        Z, A, valid, rv = pad_batch(data, idx, heads)
        kl = kl_rows(A, model(Z, valid), valid)
        tot += float((kl * rv[:, None]).sum())
        rows += int(rv.sum()) * A.shape[1]
    return tot / max(rows, 1)


def mean_positional_pattern(train: SegmentData) -> torch.Tensor:
    """``(H, Smax, Smax + 1)`` mean training attention by absolute (row, column) position."""
    Smax = max(z.shape[0] for z in train.Z)
    H = train.A[0].shape[0]
    tot = torch.zeros(H, Smax, Smax + 1)
    cnt = torch.zeros(Smax, Smax + 1)
    for a in train.A:
        S = a.shape[1]
        tot[:, :S, :S + 1] += a
        cnt[:S, :S + 1] += 1
    return tot / cnt.clamp_min(1)


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


def _smooth(logq: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    q = logq.exp() * valid[:, None]
    u = valid[:, None].float() / valid.sum(-1, keepdim=True)[:, None].clamp_min(1)
    return torch.log((1 - EPS) * q + EPS * u)


@torch.no_grad()
def evaluate_heads(predict, data: SegmentData, n_heads: int, batch: int = 16,
                   positional: torch.Tensor | None = None, methods: tuple[str, ...] = ("model",) + BASELINES) -> pd.DataFrame:
    """Per-head held-out KL and MSE for ``predict`` (a callable ``(Z, valid) -> logprobs``) and baselines.

    Returns:
        Long table ``head_index, method, metric (kl|mse), value``.
    """
    sums = {(m, k): torch.zeros(n_heads, dtype=torch.float64) for m in methods for k in ("kl", "mse")}
    rows, entries = 0, 0
    for idx in sorted_batches(data, batch):
        Z, A, valid, rv = pad_batch(data, idx)
        rows += int(rv.sum())
        entries += int(valid.sum())
        for m in methods:
            if m == "model":
                logq = predict(Z, valid)
            else:
                if m == "positional" and positional is None:
                    continue
                logq = baseline_logprobs(m, valid, n_heads, positional)
            logq = _smooth(logq, valid)
            kl = (kl_rows(A, logq, valid) * rv[:, None]).sum((0, 2))  # (H,)
            se = (((logq.exp() - A) ** 2) * valid[:, None]).sum((0, 2, 3))  # (H,)
            sums[(m, "kl")] += kl.double()
            sums[(m, "mse")] += se.double()
    out = []
    for (m, k), v in sums.items():
        denom = rows if k == "kl" else entries
        if m == "positional" and positional is None:
            continue
        for h in range(n_heads):
            out.append(dict(head_index=h, method=m, metric=k, value=float(v[h]) / max(denom, 1)))
    return pd.DataFrame(out)
