"""Align several tokenizers on shared text segments, and pool attention onto them.

Every model tokenizes the same text differently, so heads are compared on *segments*: character
spans that no token of any tokenizer in play crosses. Definitional choices:

* A token's *core* is its character span with surrounding whitespace stripped (byte-level BPE puts
  the leading space inside the token, WordPiece drops it, SentencePiece marks it with a meta
  symbol; stripping makes them agree). Candidate cuts are the core starts of every token of every
  tokenizer; a cut is kept only if it lies strictly inside no token core of any tokenizer. The kept
  cuts split the text into segments, words in practice (a segment may join several words when one
  tokenizer merges them, e.g. across punctuation).
* Every non-special token belongs to exactly one segment: the one holding its core start;
  whitespace-only tokens join the segment before them (the first segment if none). So no attention
  is dropped and pooled rows keep their total mass.
* Special tokens (BOS, ``[CLS]``, ``[SEP]``) are pooled into an explicit *sink* column (column 0).
* Segment attention: ``A_seg[I, 1 + J] = sum_{j in J} A[last(I), j]`` and ``A_seg[I, 0] = sum over
  special tokens``, where ``last(I)`` is the last token of query segment ``I`` (in a causal model it
  has seen the whole segment). Rows therefore sum to 1. The alternative, the mean over a segment's
  query tokens (Clark et al. 2019), is not used.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

import numpy as np
import torch

from attendome.core.tokens import special_affixes

__all__ = ["TokenSpans", "token_spans", "shared_segments", "SegmentMap", "segment_map", "pool_attention"]


@dataclass(frozen=True)
class TokenSpans:
    """One tokenization of a text.

    Attributes:
        ids: token ids including special tokens.
        spans: ``(start, end)`` character span per token; ``None`` for special tokens.
    """

    ids: list[int]
    spans: list[tuple[int, int] | None]


def token_spans(tokenizer, text: str, max_length: int | None = None) -> TokenSpans:
    """Tokenize ``text`` with the tokenizer's template (BOS etc.) and character offsets.

    Raises:
        ValueError: the tokenizer cannot return offsets (a slow tokenizer).
    """
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(f"{type(tokenizer).__name__} is not a fast tokenizer: character offsets are needed")
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = list(enc["input_ids"])
    spans: list[tuple[int, int] | None] = [tuple(o) for o in enc["offset_mapping"]]
    prefix, suffix = special_affixes(tokenizer)
    ids = list(prefix) + ids + list(suffix)
    spans = [None] * len(prefix) + spans + [None] * len(suffix)
    if max_length is not None and len(ids) > max_length:
        raise ValueError(f"text of {len(ids)} tokens exceeds max_length {max_length}")
    return TokenSpans(ids=ids, spans=spans)


def _core(text: str, span: tuple[int, int]) -> tuple[int, int] | None:
    s, e = span
    while s < e and text[s].isspace():
        s += 1
    while e > s and text[e - 1].isspace():
        e -= 1
    return (s, e) if e > s else None


def shared_segments(text: str, tokenizations: list[TokenSpans]) -> list[tuple[int, int]]:
    """Character spans of the segments shared by all tokenizations (see module docstring)."""
    cores = [[c for sp in t.spans if sp is not None and (c := _core(text, sp)) is not None] for t in tokenizations]
    cuts = sorted({c[0] for cs in cores for c in cs})
    if not cuts:
        return []
    inside = np.zeros(len(text) + 1, dtype=bool)
    for cs in cores:
        for s, e in cs:
            inside[s + 1:e] = True  # positions strictly inside a core cannot be cuts
    kept = [c for c in cuts if not inside[c]]
    end = max(c[1] for cs in cores for c in cs)
    bounds = kept + [end]
    segs = []
    for a, b in zip(bounds[:-1], bounds[1:]):
        core = _core(text, (a, b))
        if core is not None:
            segs.append(core)
    return segs


@dataclass(frozen=True)
class SegmentMap:
    """Token-to-segment assignment for one tokenization.

    Attributes:
        seg_of_token: ``(T,)`` segment index per token, ``-1`` for special tokens (sink).
        last_token: ``(S,)`` index of the last token of each segment (the query token used).
    """

    seg_of_token: np.ndarray
    last_token: np.ndarray


def segment_map(text: str, tok: TokenSpans, segments: list[tuple[int, int]]) -> SegmentMap:
    """Assign each token to a segment.

    Raises:
        ValueError: a segment got no token (the segments were not built from this tokenization).
    """
    starts = [s for s, _ in segments]
    seg = np.full(len(tok.ids), -1, dtype=np.int64)
    prev = 0
    for i, sp in enumerate(tok.spans):
        if sp is None:
            continue
        core = _core(text, sp)
        if core is None:  # whitespace-only token joins the segment before it
            seg[i] = prev
            continue
        k = bisect.bisect_right(starts, core[0]) - 1
        k = max(k, 0)
        seg[i] = prev = k
    last = np.full(len(segments), -1, dtype=np.int64)
    for i, k in enumerate(seg):
        if k >= 0:
            last[k] = i
    if (last < 0).any():
        raise ValueError("a segment has no token in this tokenization")
    return SegmentMap(seg_of_token=seg, last_token=last)


def pool_attention(attn: torch.Tensor, smap: SegmentMap) -> torch.Tensor:
    """Pool token attention onto segments.

    Args:
        attn: ``(heads, T, T)`` attention probabilities of one prompt.
        smap: the tokenization's segment map.

    Returns:
        ``(heads, S, S + 1)``: column 0 is the sink (special tokens), column ``1 + J`` segment J.
    """
    H, T, _ = attn.shape
    S = len(smap.last_token)
    rows = attn[:, torch.as_tensor(smap.last_token), :].float()  # (H, S, T)
    col = torch.as_tensor(smap.seg_of_token + 1)  # (T,) 0 = sink
    out = torch.zeros(H, S, S + 1, dtype=torch.float32)
    out.index_add_(2, col, rows)
    return out


def segment_prompts(prompts, tokenizers: dict, max_tokens: int, min_segments: int):
    """Shared segments of every prompt for all ``tokenizers``; prompts that cannot be aligned go.

    A prompt is dropped when it exceeds ``max_tokens`` in any tokenizer, yields fewer than
    ``min_segments`` segments, or leaves a segment without a token in some tokenizer (characters a
    tokenizer drops). The reasons are counted.

    Args:
        prompts: table with ``prompt_id`` and ``text``.
        tokenizers: ``{name: tokenizer}`` of every model in play and the encoder.

    Returns:
        ``(kept_prompts, segments, dropped)``: the prompts kept (with ``n_segments``), the segment
        table (``prompt_id, seg, char_start, char_end, text``) and ``{reason: count}``.
    """
    import pandas as pd

    keep, segs, dropped = [], [], {}
    for row in prompts.itertuples(index=False):
        try:
            toks = [token_spans(t, row.text, max_tokens) for t in tokenizers.values()]
            spans = shared_segments(row.text, toks)
            if len(spans) < min_segments:
                raise ValueError("too few segments")
            for t in toks:
                segment_map(row.text, t, spans)
        except ValueError as err:
            reason = str(err).split(" of ")[0] if "exceeds" not in str(err) else "exceeds max_tokens"
            dropped[reason] = dropped.get(reason, 0) + 1
            continue
        keep.append(row._asdict() | {"n_segments": len(spans)})
        segs += [dict(prompt_id=row.prompt_id, seg=k, char_start=a, char_end=b, text=row.text[a:b])
                 for k, (a, b) in enumerate(spans)]
    return pd.DataFrame(keep), pd.DataFrame(segs), dropped
