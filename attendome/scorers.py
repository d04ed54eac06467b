"""Registry of head scorers, keyed by head type.

A scorer turns what a model does into one number per head. Three kinds exist:

* ``pattern`` scorers are pure functions of one layer's attention probabilities on the
  repeated-random-token probe: ``fn(attn, layout) -> per-sequence scores``, with
  ``attn`` of shape ``(batch, heads, query, key)`` and the result ``(batch, heads)``.
  The probe runner averages them over sequences and reports the standard error.
* ``head_output`` scorers also see each head's own output on the same probe (behavioural copying):
  ``fn(attn, layout, z=..., tokens=..., layer=..., ctx=...)``.
* ``weights`` scorers read only the weights (no forward pass): ``fn(model, params) -> rows``.
* ``behaviour`` scorers run their own probe through the model (retrieval):
  ``fn(model, params) -> rows``.

Register with :func:`register`; duplicate names are refused and unknown names are answered with
the list of available ones (:func:`get`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Literal

import torch

__all__ = ["ProbeLayout", "Scorer", "REGISTRY", "register", "get", "available"]


@dataclass(frozen=True)
class ProbeLayout:
    """Token positions of one batch of repeated-random-token sequences.

    Layout of each sequence: ``prefix (n_prefix special tokens, e.g. BOS) | r (L tokens) | r (L
    tokens) | suffix (e.g. an encoder's [SEP])``. The first copy of ``r`` starts at ``offset``.
    """

    seq_len: int  # L
    offset: int  # number of prefix tokens (1 when a BOS is prepended, else 0)
    total_len: int  # full sequence length T

    @property
    def second_half(self) -> torch.Tensor:
        """Query positions of the second copy: ``offset + L .. offset + 2L - 1``."""
        return torch.arange(self.offset + self.seq_len, self.offset + 2 * self.seq_len)


Kind = Literal["pattern", "head_output", "weights", "behaviour"]


@dataclass(frozen=True)
class Scorer:
    """One registered head scorer and its metadata.

    Attributes:
        name: head type the score measures (registry key).
        kind: ``pattern`` | ``weights`` | ``behaviour`` (see module docstring).
        fn: the scoring function.
        value_range: closed range of possible values.
        higher_is_better: True when a larger value means "more of this head type".
        version: bump when the definition changes, so old tables can be told apart.
        causal_only: the score is undefined (NaN with a reason) for bidirectional encoders.
        needs_unembedding: the score is undefined for models without an LM head.
        definition: one-line definition stored beside every value.
    """

    name: str
    kind: Kind
    fn: Callable
    value_range: tuple[float, float]
    higher_is_better: bool = True
    version: int = 1
    causal_only: bool = False
    needs_unembedding: bool = False
    definition: str = ""
    extra: dict = field(default_factory=dict)


REGISTRY: dict[str, Scorer] = {}


def register(
    name: str,
    *,
    kind: Kind,
    value_range: tuple[float, float],
    higher_is_better: bool = True,
    version: int = 1,
    causal_only: bool = False,
    needs_unembedding: bool = False,
    definition: str = "",
) -> Callable[[Callable], Callable]:
    """Decorator that registers a scorer under ``name``.

    Raises:
        ValueError: if ``name`` is already registered.
    """

    def deco(fn: Callable) -> Callable:
        if name in REGISTRY:
            raise ValueError(f"scorer {name!r} is already registered")
        REGISTRY[name] = Scorer(
            name=name,
            kind=kind,
            fn=fn,
            value_range=value_range,
            higher_is_better=higher_is_better,
            version=version,
            causal_only=causal_only,
            needs_unembedding=needs_unembedding,
            definition=definition or (fn.__doc__ or "").strip().splitlines()[0],
        )
        return fn

    return deco


def get(name: str) -> Scorer:
    """Look up a scorer; unknown names list the available ones."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown scorer {name!r}; available: {available()}") from None


def available() -> list[str]:
    """Names of all registered scorers, sorted."""
    return sorted(REGISTRY)


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


@register(
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


@register(
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


@register(
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


# Scorers defined in their own modules register on import.
from attendome import copying as _copying  # noqa: E402,F401
from attendome import retrieval as _retrieval  # noqa: E402,F401
