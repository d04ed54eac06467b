"""Phase 1 inputs: per-model segment data (features, targets, token counts, repeat targets) and
padded batches of prompts.

Features are standardised with training statistics and projected on their first ``feature_dims``
principal components (fitted on training prompts only), then concatenated with fixed sinusoidal
features of the segment index. See :mod:`attendome.clone.model` for how the predictor uses them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch


__all__ = [
    "MATCH_SCALE",
    "unit_rows",
    "match_features",
    "SegmentData",
    "Batch",
    "position_features",
    "repeat_targets",
    "fit_projection",
    "build_data",
    "valid_mask",
    "pad_batch",
    "sorted_batches",
    "length_batches",
]


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
        content: per prompt ``(S, k)`` the content features alone (no position features), unit
            length, for the match terms (:func:`match_features`); empty: taken from ``Z``.
    """

    prompt_ids: list[str]
    Z: list[torch.Tensor]
    A: list[torch.Tensor] | None
    causal: bool
    logn: list[torch.Tensor] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)
    ind: list[torch.Tensor] = field(default_factory=list)
    dup: list[torch.Tensor] = field(default_factory=list)
    content: list[torch.Tensor] = field(default_factory=list)

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
        if not self.content:
            self.content = [unit_rows(z) for z in self.Z]

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


def build_data(
    prompt_ids,
    features: dict,
    attention: dict | None,
    mean: torch.Tensor,
    std: torch.Tensor,
    position_dims: int,
    causal: bool,
    proj: torch.Tensor | None = None,
    ntok: dict | None = None,
    kinds: dict | None = None,
    seg_texts: dict | None = None,
) -> SegmentData:
    """Assemble :class:`SegmentData` (features standardised/projected with training statistics).

    Args:
        ntok: ``{prompt_id: (S + 1,) token counts}`` of the target model (sink first), optional.
        kinds: ``{prompt_id: 'prose' | 'repeat'}``, optional.
        seg_texts: ``{prompt_id: [segment text, ...]}`` for the repeat targets, optional.
    """
    Z, A, C = [], [] if attention is not None else None, []
    logn, knd, ind, dup = [], [], [], []
    for pid in prompt_ids:
        f = (features[pid].float() - mean) / std  # (S, d)
        if proj is not None:
            f = f @ proj  # (S, k)
        S = f.shape[0]
        Z.append(torch.cat([f, position_features(S, position_dims)], dim=1))
        C.append(unit_rows(f))
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
    return SegmentData(list(prompt_ids), Z, A, causal, logn, knd, ind, dup, C)


MATCH_SCALE = 10.0  # cosine similarities are multiplied by this before their per-head weight


def unit_rows(x: torch.Tensor) -> torch.Tensor:
    """``x`` with every row scaled to unit length (zero rows stay zero)."""
    return x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def match_features(C: torch.Tensor) -> torch.Tensor:
    """``(B, 2, S, S)`` the match terms of every (query I, key J) pair, from unit content features ``C
    (B, S, k)``.

    * ``[:, 0, I, J] = MATCH_SCALE * cos(C_I, C_J)``: the key is the same word as the query (the
      duplicate-token motif);
    * ``[:, 1, I, J] = MATCH_SCALE * cos(C_I, C_{J-1})``: the key comes after an earlier copy of the
      query (the induction motif); 0 for ``J = 0``.

    No low-rank bilinear form of the features expresses "same word" for every word at once (that
    needs the identity, of full rank); here each head only weights these two ready-made similarities.
    The scale lets a weight of order 1 make the match sharp.
    """
    same = C @ C.transpose(-1, -2)  # (B, S, S)
    after = torch.zeros_like(same)
    after[:, :, 1:] = same[:, :, :-1]
    return MATCH_SCALE * torch.stack([same, after], dim=1)


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
    match: torch.Tensor | None = None


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
        logn[b, : s + 1] = data.logn[i]
        if A is not None:
            a = data.A[i] if heads is None else data.A[i][heads]
            A[b, :, :s, : s + 1] = a
    valid = valid_mask(lengths, S, data.causal)
    row_valid = torch.arange(S)[None, :] < torch.tensor(lengths)[:, None]
    C = torch.zeros(B, S, data.content[idx[0]].shape[1])
    for b, i in enumerate(idx):
        C[b, : lengths[b]] = data.content[i]
    return Batch(Z, A, valid, row_valid, logn, list(idx), match_features(C))


def sorted_batches(data: SegmentData, batch: int) -> list[list[int]]:
    """Deterministic batches of prompts sorted by length (for evaluation)."""
    order = sorted(range(len(data.Z)), key=lambda i: data.Z[i].shape[0])
    return [order[s : s + batch] for s in range(0, len(order), batch)]


def length_batches(data: SegmentData, batch: int, rng: np.random.Generator) -> list[list[int]]:
    """Batches of prompts of similar length (less padding), in random order."""
    order = sorted(range(len(data.Z)), key=lambda i: (data.Z[i].shape[0], rng.random()))
    batches = [order[s : s + batch] for s in range(0, len(order), batch)]
    return [batches[i] for i in rng.permutation(len(batches))]
