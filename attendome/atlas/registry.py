"""Registry of head scorers, keyed by head type (the mechanism only; scorers live in their modules).

A scorer turns what a model does into one number per head. Four kinds exist:

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
the list of available ones (:func:`get`). This module imports nothing from the package, so every
scorer module (and the params checks in :mod:`attendome.atlas.scorers`) can import it without a
circle. The filled registry (every built-in scorer registered) is :mod:`attendome.atlas.scorers`.
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
