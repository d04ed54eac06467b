"""Attention-pattern scorers on the repeated-random-token probe: induction, duplicate-token,
previous-token. Pure functions of one layer's attention probabilities and the probe layout.
"""

from __future__ import annotations

import torch

from attendome.atlas import registry as S
from attendome.atlas.registry import ProbeLayout

__all__ = ["induction", "duplicate_token", "previous_token"]


def _diag_mean(attn: torch.Tensor, queries: torch.Tensor, shift: int) -> torch.Tensor:
    """Mean over ``queries`` of ``attn[..., i, i - shift]``.

    Args:
        attn: ``(batch, heads, T, T)`` attention probabilities.
        queries: ``(n,)`` query positions, all ``>= shift``.
        shift: key offset, ``key = query - shift``.

    Returns:
        ``(batch, heads)`` mean attention on that diagonal.
    """
    keys = queries - shift
    return attn[:, :, queries, keys].float().mean(dim=-1)  # (batch, heads)


@S.register(
    "induction",
    kind="pattern",
    value_range=(0.0, 1.0),
    causal_only=True,
    definition="mean over second-copy queries i of A[i, i-L+1] (the token after the earlier copy)",
)
def induction(attn: torch.Tensor, layout: ProbeLayout) -> torch.Tensor:
    """Induction score: attention from each second-copy token to the token *after* its first copy.

    Mean over the L queries of the second copy of ``A[i, i - L + 1]``. Range [0, 1]; higher means
    more induction-like; a perfect induction head scores 1. This is the seed's definition (the
    TransformerLens ``mul`` detector reports about half of it on the same probe, since it also
    averages over first-copy rows that have no target). Undefined for bidirectional encoders,
    which can see the next token directly.

    Args:
        attn: ``(batch, heads, T, T)``.
        layout: probe positions.

    Returns:
        ``(batch, heads)`` per-sequence scores.
    """
    return _diag_mean(attn, layout.second_half, layout.seq_len - 1)


@S.register(
    "duplicate_token",
    kind="pattern",
    value_range=(0.0, 1.0),
    definition="mean over second-copy queries i of A[i, i-L] (the earlier copy of the same token)",
)
def duplicate_token(attn: torch.Tensor, layout: ProbeLayout) -> torch.Tensor:
    """Duplicate-token score: attention from each second-copy token to its own earlier copy.

    Mean over the L queries of the second copy of ``A[i, i - L]``. Range [0, 1]; higher means more
    duplicate-token-like.

    Args:
        attn: ``(batch, heads, T, T)``.
        layout: probe positions.

    Returns:
        ``(batch, heads)`` per-sequence scores.
    """
    return _diag_mean(attn, layout.second_half, layout.seq_len)


@S.register(
    "previous_token",
    kind="pattern",
    value_range=(0.0, 1.0),
    definition="mean over content queries i > first of A[i, i-1] (BOS never counts as a target)",
)
def previous_token(attn: torch.Tensor, layout: ProbeLayout) -> torch.Tensor:
    """Previous-token score: attention from each token to the token just before it.

    Mean of ``A[i, i - 1]`` over content positions ``i = offset + 1 .. offset + 2L - 1``: the first
    content token is excluded, because its previous token is BOS, where many heads park attention
    as a sink (counting it would reward sinks, not previous-token behaviour). Range [0, 1]; higher
    means more previous-token-like.

    Args:
        attn: ``(batch, heads, T, T)``.
        layout: probe positions.

    Returns:
        ``(batch, heads)`` per-sequence scores.
    """
    queries = torch.arange(layout.offset + 1, layout.offset + 2 * layout.seq_len)
    return _diag_mean(attn, queries, 1)
