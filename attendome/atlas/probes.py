"""Probe inputs: repeated random tokens (induction, previous-token, duplicate-token, copying).

Definitional choices, made here once for every scorer:

* Token ids are drawn from the middle half of the base vocabulary (ids in ``[V/4, 3V/4)``),
  excluding special and added tokens, so that rare byte tokens, control tokens and the
  tokenizer's reserved ranges stay out of the probe.
* Each random half ``r`` has ``L`` *distinct* ids (drawn without replacement), so every
  second-copy token has exactly one earlier copy and one induction target.
* Special tokens follow the tokenizer's own template: whatever ``encode(add_special_tokens=True)``
  adds before and after the text (BOS for most decoders, ``[CLS]``/``[SEP]`` for BERT). A decoder
  whose template adds nothing but which has a BOS token gets the BOS prepended; one without a BOS
  (e.g. Qwen2) gets no prefix.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from attendome.atlas.registry import ProbeLayout
from attendome.core.tokens import special_affixes

__all__ = ["RepeatedTokenProbe", "special_affixes", "candidate_token_ids", "make_repeated_tokens"]


@dataclass(frozen=True)
class RepeatedTokenProbe:
    """A batch of ``prefix | r | r | suffix`` sequences.

    Attributes:
        tokens: ``(num_samples, T)`` token ids.
        layout: positions of the two copies.
        prefix: special ids before the text (e.g. ``[BOS]``).
        suffix: special ids after the text (e.g. ``[SEP]``).
    """

    tokens: torch.Tensor  # (N, T) int64
    layout: ProbeLayout
    prefix: tuple[int, ...]
    suffix: tuple[int, ...]

    @property
    def bos_prepended(self) -> bool:
        return len(self.prefix) > 0


def candidate_token_ids(tokenizer) -> np.ndarray:
    """Ids in the middle half of the base vocabulary, minus special and added tokens."""
    vocab = int(getattr(tokenizer, "vocab_size", None) or len(tokenizer))
    lo, hi = vocab // 4, (3 * vocab) // 4
    ids = np.arange(lo, hi)
    banned = set(getattr(tokenizer, "all_special_ids", []) or [])
    banned |= set(getattr(tokenizer, "added_tokens_decoder", {}) or {})
    if banned:
        ids = ids[~np.isin(ids, np.fromiter(banned, dtype=np.int64))]
    return ids


def make_repeated_tokens(tokenizer, num_samples: int, seq_len: int, seed: int) -> RepeatedTokenProbe:
    """Draw ``num_samples`` sequences ``prefix | r | r | suffix`` with ``len(r) = seq_len``.

    The draw depends only on ``seed``, the tokenizer's vocabulary and the sizes, so the same params
    give the same tokens on every machine.
    """
    cands = candidate_token_ids(tokenizer)
    if len(cands) < seq_len:
        raise ValueError(f"seq_len {seq_len} exceeds the {len(cands)} candidate token ids")
    rng = np.random.default_rng(seed)
    halves = np.stack([rng.choice(cands, size=seq_len, replace=False) for _ in range(num_samples)])
    prefix, suffix = special_affixes(tokenizer)
    n = num_samples
    parts = [np.tile(np.asarray(prefix, dtype=np.int64), (n, 1)), halves, halves,
             np.tile(np.asarray(suffix, dtype=np.int64), (n, 1))]
    tokens = torch.from_numpy(np.concatenate(parts, axis=1).astype(np.int64))  # (N, T)
    layout = ProbeLayout(seq_len=seq_len, offset=len(prefix), total_len=tokens.shape[1])
    return RepeatedTokenProbe(tokens=tokens, layout=layout, prefix=tuple(prefix), suffix=tuple(suffix))
