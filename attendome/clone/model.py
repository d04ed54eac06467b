"""Phase 1, the predictor: clone every head's segment attention from frozen encoder features.

Inputs per prompt: the frozen encoder's segment features ``Z`` (segments x d), standardised with
training statistics and projected on their first ``feature_dims`` principal components (fitted on
training prompts only), concatenated with fixed sinusoidal features of the segment index
(``position_dims``); and the target model's own number of tokens per segment ``n_J`` (its
tokenisation is known input, not something to predict). Per head ``h``:

    q_I = Z_I Q_h                         (query features: the segment itself)
    k_J = [Z_J, Z_{J-1}] K_h              (key features: the segment and the one before it)
    logits[I, 1 + J] = q_I . k_J / sqrt(r) + p_h[clip(I - J, -R, R)] + w_h log n_J + a_h[I, 1 + J]
                       + u_h . [m(I, J), m(I, J - 1)]                   (match terms, when on)
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
* Match terms (``match_terms``): ``m(I, J) = 10 cos(C_I, C_J)`` of the content features (no
  position features), so ``u_h[0]`` weights "the key is the same word" (duplicate heads) and
  ``u_h[1]`` "the key follows an earlier copy of the query" (induction heads). A rank-``r`` bilinear
  form cannot express either for every word at once (it needs the identity); here each head owns
  two numbers, 0 at the start (:func:`~attendome.clone.data.match_features`).
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


Training: :func:`train_cloner` (all heads of a model as one batched module); losses in
:mod:`attendome.clone.losses`, evaluation in :mod:`attendome.clone.evaluate`.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from attendome.clone.data import Batch, SegmentData, length_batches, pad_batch
from attendome.clone.losses import EntropyCache, batch_kl, ce_loss, mean_kl
from attendome.clone.positional import absolute_bias, positional_basis
from attendome.clone.training import FitResult, fit
from attendome.core.params import TrainParams


__all__ = ["NEG", "key_features", "offsets", "bilinear_logprobs", "BilinearCloner", "train_cloner"]

NEG = -1e9  # logit of invalid entries (see bilinear_logprobs)


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
                      abs_bias: torch.Tensor | None = None, match: torch.Tensor | None = None,
                      match_w: torch.Tensor | None = None) -> torch.Tensor:
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
        match: ``(B, 2, S, S)`` match terms (:func:`~attendome.clone.data.match_features`) and
            match_w ``(H, 2)`` their per-head weights, or None.

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
    if match is not None and match_w is not None:
        logits = logits + torch.einsum("bmij,hm->bhij", match, match_w)  # (B, H, S, S)
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
        match_terms: each head also weights the two match terms (see module docstring).
    """

    def __init__(self, n_heads: int, d_in: int, rank: int, seed: int = 0, max_offset: int = 16,
                 prev_keys: bool = True, basis: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
                 match_terms: bool = False):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        d_k = 2 * d_in if prev_keys else d_in
        self.Q = nn.Parameter(torch.randn(n_heads, d_in, rank, generator=g) / math.sqrt(d_in))
        self.K = nn.Parameter(torch.randn(n_heads, d_k, rank, generator=g) / math.sqrt(d_k))
        self.sink_w = nn.Parameter(torch.zeros(n_heads, d_in))
        self.sink_b = nn.Parameter(torch.zeros(n_heads))
        self.rel = nn.Parameter(torch.zeros(n_heads, 2 * max_offset + 1))
        self.ntok_w = nn.Parameter(torch.ones(n_heads))
        # weights of the two match terms (same word, after the same word), 0 at the start
        self.match_w = nn.Parameter(torch.zeros(n_heads, 2)) if match_terms else None
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
                                 batch.valid, sel(self.rel), batch.logn, sel(self.ntok_w), ab,
                                 batch.match, None if self.match_w is None else sel(self.match_w))

    def invariants(self) -> torch.Tensor:
        """``(H, F)`` a head's function, free of the arbitrary basis of its rank-r factors: the bilinear
        form ``Q K^T`` (flattened), the sink weights, the relative-position bias, ``w_h`` and the
        absolute-position code."""
        M = (self.Q.double() @ self.K.double().transpose(-1, -2)).flatten(1)  # (H, d * d_k)
        parts = [M, self.sink_w.double(), self.rel.double(), self.ntok_w.double()[:, None]]
        if self.pos_coef is not None:
            parts.append(self.pos_coef.double())
        if self.match_w is not None:
            parts.append(self.match_w.double())
        return torch.cat(parts, dim=1)


def train_cloner(train: SegmentData, val: SegmentData, tp: TrainParams, n_heads: int, seed: int, tracker=None,
                 progress: bool = True, desc: str = "clone") -> tuple[BilinearCloner, FitResult]:
    """Train one batched cloner of all ``n_heads`` heads on ``train``; the epoch is chosen on ``val``.

    Args:
        seed: initialisation and batch-order seed; derive it from the model key
            (:func:`~attendome.clone.training.seed_for`) so that no two models start alike.
    """
    torch.manual_seed(seed)
    basis = positional_basis([train], tp.position_components, tp.position_eps) if tp.position_components else None
    model = BilinearCloner(n_heads, train.d_in, tp.rank, seed, tp.max_offset, tp.prev_keys, basis, tp.match_terms)
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
