"""Phase 1: clone every head's segment attention from frozen encoder features.

Inputs per prompt: the frozen encoder's segment features ``Z`` (segments x d), standardised with
training statistics and projected on their first ``feature_dims`` principal components (fitted on
training prompts only), concatenated with fixed sinusoidal features of the segment index
(``position_dims``); and the target model's own number of tokens per segment ``n_J`` (its
tokenisation is known input, not something to predict). Per head ``h``:

    q_I = Z_I Q_h                         (query features: the segment itself)
    k_J = [Z_J, Z_{J-1}] K_h              (key features: the segment and the one before it)
    logits[I, 1 + J] = q_I . k_J / sqrt(r) + p_h[clip(I - J, -R, R)] + w_h log n_J + a_h[I, 1 + J]
    logits[I, 0]     = Z_I . s_h + b_h + w_h log n_sink + a_h[I, 0]   (the sink: special tokens)
    A_hat_h = softmax over the valid columns of each row              (keys J <= I when causal)
    a_h = mu + sum_p c_h[p] B_p                                       (absolute-position bias)

Definitional choices and why:

* Keys see the *previous* segment's features too (``Z_{J-1}``, zeros for the first segment): an
  induction head attends to the segment after an earlier copy of the current one, i.e. to the J
  whose predecessor matches I. With ``Z_J`` alone that needs a second-order match the bilinear
  form cannot express; with ``Z_{J-1}`` in the key it is one bilinear term.
* ``w_h log n_J`` (``w_h`` learned, initialised at 1): segment attention sums a head's attention
  over the segment's tokens, so a segment of ``n`` tokens gets about ``n`` times the mass of a
  one-token segment under the same per-token logit. ``n`` counts are clamped at 1 (the sink of a
  model without special tokens, e.g. Qwen, has none and gets no bias).
* ``p_h`` is a T5-style relative-position bias over ``R = max_offset`` offsets, so purely
  positional heads are expressible without the features.
* ``a_h`` is an absolute-position bias in a low-dimensional basis (:func:`positional_basis`):
  ``mu`` and ``B_1..B_P`` are the mean and the first ``position_components`` principal components
  of the heads' log mean positional patterns on the *training* prompts (row-centred, ``+eps`` before
  the log), fixed; each head owns only its ``P`` coefficients ``c_h``, initialised at its own
  projection. So a head starts from (a smoothed, low-rank version of) its positional habit and the
  rest of the predictor learns what content adds to it. Rows or columns beyond the longest
  training prompt get no absolute bias.

All heads of a model are one batched module. Loss: row-wise KL(A || A_hat), optimised as the
cross-entropy (which differs by the constant entropy of A), averaged over valid rows and heads.

Evaluation on held-out prompts reports, per head, KL and MSE for the predictor and four baselines
on the same rows: ``uniform`` over the valid columns, ``bos`` (all mass on the sink), ``previous``
(all mass on the previous segment; the sink for the first segment), and ``positional`` (the head's
own mean attention by absolute (row, column) position on the training prompts). To keep KL finite
for one-hot baselines every prediction is smoothed as ``(1 - eps) A_hat + eps * uniform`` with
``eps = 1e-4`` before scoring (the same for all methods). Metrics are given over all held-out
prompts (``kind = all``) and separately for prose (``pydoc``/user text) and generated repeat probes
(``repeat``). On repeat probes the *target mass* is the attention on the induction target (the
segment after the earlier copy of the query segment) and on the duplicate target (the earlier copy
itself), predicted and true, averaged over the queries that have one.

KL: >= 0, lower is better, 0 = perfect. MSE: mean over valid (I, column) entries of the squared
difference, in [0, 1], lower is better. Target mass: [0, 1].
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from torch import nn

from attendome.clone.training import FitResult, fit

__all__ = ["EPS", "BASELINES", "KINDS", "SegmentData", "Batch", "position_features", "fit_projection",
           "build_data", "repeat_targets", "valid_mask", "pad_batch", "key_features", "bilinear_logprobs",
           "BilinearCloner", "kl_rows", "ce_loss", "batch_kl", "EntropyCache", "sorted_batches", "length_batches",
           "mean_kl", "mean_positional_pattern", "log_positional", "positional_basis", "project_positional", "absolute_bias", "baseline_logprobs", "evaluate_heads", "train_cloner"]

EPS = 1e-4
NEG = -1e9  # logit of invalid entries (see bilinear_logprobs)
BASELINES = ("uniform", "bos", "previous", "positional")
KINDS = ("all", "prose", "repeat")


def position_features(S: int, dims: int) -> torch.Tensor:
    """``(S, dims)`` sinusoidal features of segment indices (periods from 2 to ~200 segments)."""
    if dims == 0:
        return torch.zeros(S, 0)
    pos = torch.arange(S, dtype=torch.float32)[:, None]
    freqs = torch.exp(torch.linspace(math.log(math.pi), math.log(2 * math.pi / 200), dims // 2))[None, :]
    return torch.cat([torch.sin(pos * freqs), torch.cos(pos * freqs)], dim=1)


def repeat_targets(seg_texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Induction and duplicate targets of each query segment.

    For query segment ``I``, let ``J < I`` be the latest earlier segment with the same text (the
    earlier copy). The duplicate target is ``J``; the induction target is ``J + 1`` (the segment
    after the earlier copy) when ``J + 1 < I``. ``-1`` where there is none.

    Returns:
        ``(ind (S,), dup (S,))`` int64.
    """
    S = len(seg_texts)
    ind = torch.full((S,), -1, dtype=torch.long)
    dup = torch.full((S,), -1, dtype=torch.long)
    last: dict[str, int] = {}
    for i, t in enumerate(seg_texts):
        if t in last:
            j = last[t]
            dup[i] = j
            if j + 1 < i:
                ind[i] = j + 1
        last[t] = i
    return ind, dup


@dataclass
class SegmentData:
    """Inputs and targets of one model on one split.

    Attributes:
        prompt_ids: prompt order.
        Z: per prompt ``(S, d_in)`` standardised, projected features + position features.
        A: per prompt ``(n_heads, S, S + 1)`` float32 targets (rows sum to 1), or None.
        causal: whether the target model is causal (keys J <= I only).
        logn: per prompt ``(S + 1,)`` log of the target model's token count per column (sink first),
            counts clamped at 1.
        kinds: per prompt ``prose`` or ``repeat``.
        ind, dup: per prompt ``(S,)`` induction / duplicate target segment of each query (-1: none).
    """

    prompt_ids: list[str]
    Z: list[torch.Tensor]
    A: list[torch.Tensor] | None
    causal: bool
    logn: list[torch.Tensor] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)
    ind: list[torch.Tensor] = field(default_factory=list)
    dup: list[torch.Tensor] = field(default_factory=list)

    def __post_init__(self) -> None:
        n = len(self.Z)
        if not self.logn:
            self.logn = [torch.zeros(z.shape[0] + 1) for z in self.Z]
        if not self.kinds:
            self.kinds = ["prose"] * n
        if not self.ind:
            self.ind = [torch.full((z.shape[0],), -1, dtype=torch.long) for z in self.Z]
        if not self.dup:
            self.dup = [torch.full((z.shape[0],), -1, dtype=torch.long) for z in self.Z]

    @property
    def d_in(self) -> int:
        return self.Z[0].shape[1]

    def __len__(self) -> int:
        return len(self.Z)


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
               position_dims: int, causal: bool, proj: torch.Tensor | None = None,
               ntok: dict | None = None, kinds: dict | None = None, seg_texts: dict | None = None) -> SegmentData:
    """Assemble :class:`SegmentData` (features standardised/projected with training statistics).

    Args:
        ntok: ``{prompt_id: (S + 1,) token counts}`` of the target model (sink first), optional.
        kinds: ``{prompt_id: 'prose' | 'repeat'}``, optional.
        seg_texts: ``{prompt_id: [segment text, ...]}`` for the repeat targets, optional.
    """
    Z, A = [], [] if attention is not None else None
    logn, knd, ind, dup = [], [], [], []
    for pid in prompt_ids:
        f = (features[pid].float() - mean) / std  # (S, d)
        if proj is not None:
            f = f @ proj  # (S, k)
        S = f.shape[0]
        Z.append(torch.cat([f, position_features(S, position_dims)], dim=1))
        if attention is not None:
            a = attention[pid].float()  # (H, S, S+1)
            A.append(a / a.sum(-1, keepdim=True).clamp_min(1e-12))
        logn.append(torch.log(ntok[pid].float().clamp_min(1)) if ntok is not None else torch.zeros(S + 1))
        knd.append(kinds[pid] if kinds is not None else "prose")
        if seg_texts is not None:
            i, d = repeat_targets(seg_texts[pid])
        else:
            i = d = torch.full((S,), -1, dtype=torch.long)
        ind.append(i)
        dup.append(d)
    return SegmentData(list(prompt_ids), Z, A, causal, logn, knd, ind, dup)


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


@dataclass
class Batch:
    """A padded batch of prompts.

    Attributes:
        Z: ``(B, S, d)`` features (zeros on padding).
        A: ``(B, H, S, S + 1)`` targets or None.
        valid: ``(B, S, S + 1)`` valid entries.
        row_valid: ``(B, S)`` real rows.
        logn: ``(B, S + 1)`` log token counts (0 on padding).
        idx: indices of the prompts in the split.
    """

    Z: torch.Tensor
    A: torch.Tensor | None
    valid: torch.Tensor
    row_valid: torch.Tensor
    logn: torch.Tensor
    idx: list[int]


def pad_batch(data: SegmentData, idx, heads: torch.Tensor | None = None) -> Batch:
    """Pad prompts ``idx`` of ``data`` to one length (targets of ``heads`` only, when given)."""
    lengths = [data.Z[i].shape[0] for i in idx]
    S = max(lengths)
    B = len(idx)
    Z = torch.zeros(B, S, data.d_in)
    logn = torch.zeros(B, S + 1)
    A = None
    if data.A is not None:
        H = data.A[idx[0]].shape[0] if heads is None else len(heads)
        A = torch.zeros(B, H, S, S + 1)
    for b, i in enumerate(idx):
        s = lengths[b]
        Z[b, :s] = data.Z[i]
        logn[b, :s + 1] = data.logn[i]
        if A is not None:
            a = data.A[i] if heads is None else data.A[i][heads]
            A[b, :, :s, :s + 1] = a
    valid = valid_mask(lengths, S, data.causal)
    row_valid = torch.arange(S)[None, :] < torch.tensor(lengths)[:, None]
    return Batch(Z, A, valid, row_valid, logn, list(idx))


def key_features(Z: torch.Tensor) -> torch.Tensor:
    """``(B, S, 2d)``: each segment's features next to its predecessor's (zeros before the first)."""
    prev = torch.zeros_like(Z)
    prev[:, 1:] = Z[:, :-1]
    return torch.cat([Z, prev], dim=-1)


def offsets(S: int, max_offset: int) -> torch.Tensor:
    """``(S, S)`` bucket index ``clip(I - J, -R, R) + R`` of the relative-position bias."""
    i = torch.arange(S)
    return (i[:, None] - i[None, :]).clamp(-max_offset, max_offset) + max_offset


def bilinear_logprobs(Z: torch.Tensor, Q: torch.Tensor, K: torch.Tensor, sink_w: torch.Tensor,
                      sink_b: torch.Tensor, valid: torch.Tensor, rel: torch.Tensor | None = None,
                      logn: torch.Tensor | None = None, ntok_w: torch.Tensor | None = None,
                      abs_bias: torch.Tensor | None = None) -> torch.Tensor:
    """Log attention of bilinear heads (see module docstring).

    Args:
        Z: ``(B, S, d)`` features.
        Q: ``(H, d, r)`` query maps; K: ``(H, d_k, r)`` key maps, ``d_k`` = ``d`` (keys see the segment
            only) or ``2d`` (the segment and its predecessor, :func:`key_features`).
        sink_w: ``(H, d)``; sink_b: ``(H,)`` sink logit ``Z[I] . s_h + b_h``.
        valid: ``(B, S, S + 1)`` valid entries.
        rel: ``(H, 2R + 1)`` relative-position bias, or None.
        logn: ``(B, S + 1)`` log token counts and ntok_w ``(H,)`` their weight, or None.
        abs_bias: ``(H, S, S + 1)`` absolute-position bias (:func:`absolute_bias`), or None.

    Returns:
        ``(B, H, S, S + 1)`` log-probabilities (about -1e9 on invalid entries, whose probability is 0;
        padded rows are junk and must be masked by the caller with ``row_valid``).
    """
    r = Q.shape[-1]
    S = Z.shape[1]
    Zk = key_features(Z) if K.shape[1] == 2 * Z.shape[-1] else Z
    q = torch.einsum("bsd,hdr->bhsr", Z, Q)  # (B, H, S, r)
    k = torch.einsum("bsd,hdr->bhsr", Zk, K)  # (B, H, S, r)
    logits = q @ k.transpose(-1, -2) / math.sqrt(r)  # (B, H, S, S)
    if rel is not None:
        R = (rel.shape[1] - 1) // 2
        logits = logits + rel[:, offsets(S, R)][None]  # (1, H, S, S)
    sink = torch.einsum("bsd,hd->bhs", Z, sink_w) + sink_b[None, :, None]  # (B, H, S)
    full = torch.cat([sink.unsqueeze(-1), logits], dim=-1)  # (B, H, S, S+1)
    if logn is not None and ntok_w is not None:
        full = full + ntok_w[None, :, None, None] * logn[:, None, None, :]  # (B, H, 1, S+1) broadcast
    if abs_bias is not None:
        full = full + abs_bias[None]
    # invalid entries get a large finite negative logit, not -inf: their probability is exactly 0
    # after the softmax (exp underflows), a padded row (all entries invalid) stays finite (uniform
    # junk, masked out by every loss and metric), and 0 * logq is 0 in the cross-entropy, so no
    # NaN handling or second mask is needed on the hot path
    full = full.masked_fill(~valid[:, None], NEG)
    return torch.log_softmax(full, dim=-1)


class BilinearCloner(nn.Module):
    """All heads of one model as one batched bilinear module (see module docstring).

    Args:
        n_heads: heads cloned. d_in: feature dimension. rank: bilinear rank r.
        seed: initialisation seed (derive it from the model key, :func:`attendome.clone.training.seed_for`,
            so that no two models start from the same weights).
        max_offset: R of the relative-position bias.
        prev_keys: keys also see the previous segment's features.
        basis: ``(mu, basis, coef)`` of :func:`positional_basis` for the absolute-position bias (fixed
            ``mu`` and ``basis``; learned per-head ``coef`` starting there), or None for none.
    """

    def __init__(self, n_heads: int, d_in: int, rank: int, seed: int = 0, max_offset: int = 16,
                 prev_keys: bool = True, basis: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        d_k = 2 * d_in if prev_keys else d_in
        self.Q = nn.Parameter(torch.randn(n_heads, d_in, rank, generator=g) / math.sqrt(d_in))
        self.K = nn.Parameter(torch.randn(n_heads, d_k, rank, generator=g) / math.sqrt(d_k))
        self.sink_w = nn.Parameter(torch.zeros(n_heads, d_in))
        self.sink_b = nn.Parameter(torch.zeros(n_heads))
        self.rel = nn.Parameter(torch.zeros(n_heads, 2 * max_offset + 1))
        self.ntok_w = nn.Parameter(torch.ones(n_heads))
        if basis is not None:
            mu, B, coef = basis
            self.register_buffer("pos_mu", mu.clone())
            self.register_buffer("pos_basis", B.clone())
            self.pos_coef = nn.Parameter(coef.clone())
        else:
            self.pos_coef = None

    def forward(self, batch: Batch, heads: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, H, S, S + 1)`` log attention of all heads (or of ``heads``) on ``batch``."""
        sel = (lambda t: t) if heads is None else (lambda t: t[heads])  # noqa: E731
        ab = None
        if self.pos_coef is not None:
            ab = absolute_bias(self.pos_mu, self.pos_basis, sel(self.pos_coef), batch.Z.shape[1])
        return bilinear_logprobs(batch.Z, sel(self.Q), sel(self.K), sel(self.sink_w), sel(self.sink_b),
                                 batch.valid, sel(self.rel), batch.logn, sel(self.ntok_w), ab)

    def invariants(self) -> torch.Tensor:
        """``(H, F)`` a head's function, free of the arbitrary basis of its rank-r factors: the bilinear
        form ``Q K^T`` (flattened), the sink weights, the relative-position bias, ``w_h`` and the
        absolute-position code."""
        M = (self.Q.double() @ self.K.double().transpose(-1, -2)).flatten(1)  # (H, d * d_k)
        parts = [M, self.sink_w.double(), self.rel.double(), self.ntok_w.double()[:, None]]
        if self.pos_coef is not None:
            parts.append(self.pos_coef.double())
        return torch.cat(parts, dim=1)


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


def sorted_batches(data: SegmentData, batch: int) -> list[list[int]]:
    """Deterministic batches of prompts sorted by length (for evaluation)."""
    order = sorted(range(len(data.Z)), key=lambda i: data.Z[i].shape[0])
    return [order[s:s + batch] for s in range(0, len(order), batch)]


def length_batches(data: SegmentData, batch: int, rng: np.random.Generator) -> list[list[int]]:
    """Batches of prompts of similar length (less padding), in random order."""
    order = sorted(range(len(data.Z)), key=lambda i: (data.Z[i].shape[0], rng.random()))
    batches = [order[s:s + batch] for s in range(0, len(order), batch)]
    return [batches[i] for i in rng.permutation(len(batches))]


@torch.no_grad()
def mean_kl(predict, data: SegmentData, batch: int, heads: torch.Tensor | None = None) -> float:
    """Mean row KL of ``predict(batch) -> logprobs`` over all (or ``heads``) heads on ``data``."""
    tot, rows = 0.0, 0
    for idx in sorted_batches(data, batch):
        b = pad_batch(data, idx, heads)
        s, n = batch_kl(b.A, predict(b), b.valid, b.row_valid)
        tot, rows = tot + s, rows + n
    return tot / max(rows, 1)


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


def _smooth(logq: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    q = logq.exp() * valid[:, None]
    u = valid[:, None].float() / valid.sum(-1, keepdim=True)[:, None].clamp_min(1)
    return torch.log((1 - EPS) * q + EPS * u)


def _target_mass(q: torch.Tensor, targets: list[torch.Tensor], idx: list[int], S: int) -> tuple[torch.Tensor, int]:
    """Sum over queries with a target of ``q[b, h, I, 1 + target(I)]``: ``((H,), n_queries)``."""
    T = torch.full((len(idx), S), -1, dtype=torch.long)
    for b, i in enumerate(idx):
        T[b, :len(targets[i])] = targets[i]
    has = T >= 0  # (B, S)
    if not has.any():
        return torch.zeros(q.shape[1], dtype=torch.float64), 0
    bb, ii = has.nonzero(as_tuple=True)
    vals = q[bb, :, ii, 1 + T[bb, ii]]  # (n, H)
    return vals.double().sum(0), int(has.sum())


@torch.no_grad()
def evaluate_heads(predict, data: SegmentData, n_heads: int, batch: int = 16,
                   positional: torch.Tensor | None = None,
                   methods: tuple[str, ...] = ("model",) + BASELINES) -> pd.DataFrame:
    """Per-head held-out metrics of ``predict`` (``Batch -> (B, H, S, S+1) logprobs``) and the baselines.

    Returns:
        Long table ``head_index, method, kind, metric, value``: ``metric`` in ``kl`` and ``mse``
        for every ``kind`` in :data:`KINDS` that has prompts, and, on ``repeat`` prompts,
        ``ind_mass`` / ``dup_mass`` (mass on the induction / duplicate target) for every method
        plus ``method = 'true'`` (the head's own attention).
    """
    methods = tuple(m for m in methods if not (m == "positional" and positional is None))
    acc: dict = {}
    counts: dict = {}

    def add(key, v):
        acc[key] = acc.get(key, 0) + v

    for idx in sorted_batches(data, batch):
        b = pad_batch(data, idx)
        kinds = np.array([data.kinds[i] for i in idx])
        rv, valid = b.row_valid, b.valid
        rep = torch.as_tensor(kinds == "repeat")
        for kind, sel in (("all", torch.ones(len(idx), dtype=torch.bool)), ("prose", ~rep), ("repeat", rep)):
            if sel.any():
                counts[(kind, "rows")] = counts.get((kind, "rows"), 0) + int(rv[sel].sum())
                counts[(kind, "entries")] = counts.get((kind, "entries"), 0) + int(valid[sel].sum())
        if rep.any():
            r_idx = [i for i, k in zip(idx, kinds) if k == "repeat"]
            sub = rep.nonzero(as_tuple=True)[0]
            for tname, targets in (("ind_mass", data.ind), ("dup_mass", data.dup)):
                s, n = _target_mass(b.A[sub], targets, r_idx, b.Z.shape[1])
                add(("true", "repeat", tname), s)
                counts[("repeat", tname)] = counts.get(("repeat", tname), 0) + n
        for m in methods:
            logq = predict(b) if m == "model" else baseline_logprobs(m, valid, n_heads, positional)
            logq = _smooth(logq, valid)
            kl = kl_rows(b.A, logq, valid) * rv[:, None]  # (B, H, S)
            se = (((logq.exp() - b.A) ** 2) * valid[:, None]).sum(-1)  # (B, H, S)
            for kind, sel in (("all", slice(None)), ("prose", ~rep), ("repeat", rep)):
                if isinstance(sel, torch.Tensor) and not sel.any():
                    continue
                add((m, kind, "kl"), kl[sel].sum((0, 2)).double())
                add((m, kind, "mse"), se[sel].sum((0, 2)).double())
            if rep.any():
                sub = rep.nonzero(as_tuple=True)[0]
                q = logq[sub].exp()
                for tname, targets in (("ind_mass", data.ind), ("dup_mass", data.dup)):
                    s, _ = _target_mass(q, targets, r_idx, b.Z.shape[1])
                    add((m, "repeat", tname), s)
    out = []
    for (m, kind, metric), v in acc.items():
        denom = counts.get((kind, "rows" if metric == "kl" else "entries" if metric == "mse" else metric), 0)
        if denom == 0:
            continue
        vals = (v / denom).tolist()
        out += [dict(head_index=h, method=m, kind=kind, metric=metric, value=float(vals[h])) for h in range(n_heads)]
    return pd.DataFrame(out)


def train_cloner(train: SegmentData, val: SegmentData, tp, n_heads: int, seed: int, tracker=None,
                 progress: bool = True, desc: str = "clone") -> tuple[BilinearCloner, FitResult]:
    """Train one batched cloner of all ``n_heads`` heads on ``train``; the epoch is chosen on ``val``.

    Args:
        seed: initialisation and batch-order seed; derive it from the model key
            (:func:`~attendome.clone.training.seed_for`) so that no two models start alike.
    """
    torch.manual_seed(seed)
    basis = positional_basis([train], tp.position_components, tp.position_eps) if tp.position_components else None
    model = BilinearCloner(n_heads, train.d_in, tp.rank, seed, tp.max_offset, tp.prev_keys, basis)
    n_batches = len(length_batches(train, tp.batch_prompts, np.random.default_rng(0)))
    ent = EntropyCache(train)

    def epoch_steps(rng):
        for idx in length_batches(train, tp.batch_prompts, rng):
            def step(idx=idx):
                b = pad_batch(train, idx)
                loss = ce_loss(b.A, model(b), b.valid, b.row_valid)
                return (loss,) + batch_kl(b.A, None, b.valid, b.row_valid, loss, ent(idx))
            yield step

    res = fit(list(model.parameters()), epoch_steps, n_batches, lambda: mean_kl(model, val, tp.batch_prompts),
              tp, np.random.default_rng(seed), tracker, desc=desc, progress=progress)
    return model.eval(), res
