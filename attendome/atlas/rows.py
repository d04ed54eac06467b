"""Rows of the head-score table (:data:`attendome.core.tables.SCORE_COLUMNS`) for one scorer.

Shared by every kind of scorer (probe, weights, behaviour), so that scorer modules never import the
per-model scoring loop (:mod:`attendome.atlas.score`) that imports them.
"""

from __future__ import annotations

import json
import math

import numpy as np

from attendome.atlas import registry as S

__all__ = ["not_applicable_reason", "rows_from_samples", "nan_rows"]


def not_applicable_reason(scorer: S.Scorer, lm) -> str:
    """Why ``scorer`` is undefined for the loaded model ``lm`` ('' when it applies)."""
    if scorer.needs_unembedding and not lm.has_unembedding:
        return "model has no unembedding (LM head): the score is undefined"
    if scorer.causal_only and not lm.is_causal:
        return "bidirectional encoder: every token sees the next one, so the score is undefined"
    return getattr(lm, "unsupported", {}).get(scorer.name, "")


def rows_from_samples(lm, name: str, samples: np.ndarray, method: str, settings: dict) -> list[dict]:
    """Long-format rows (mean and standard error over axis 0) for one scorer.

    Args:
        lm: the loaded model (its ``key`` names the rows).
        name: scorer name.
        samples: ``(n_items, n_layers, n_heads)`` per-item scores.
        method: how the numbers were produced (e.g. ``probe:repeated_tokens``).
        settings: probe settings, stored as JSON beside every value.
    """
    scorer = S.get(name)
    n = samples.shape[0]
    mean = samples.mean(axis=0)  # (layers, heads)
    se = samples.std(axis=0, ddof=1) / math.sqrt(n) if n > 1 else np.full_like(mean, np.nan)
    rows = []
    for layer in range(samples.shape[1]):
        for head in range(samples.shape[2]):
            rows.append(dict(model=lm.key, layer=layer, head=head, score_name=name,
                             value=float(mean[layer, head]), stderr=float(se[layer, head]), n=n,
                             method=method, settings=json.dumps(settings, sort_keys=True),
                             scorer_version=scorer.version, reason=""))
    return rows


def nan_rows(lm, name: str, reason: str, method: str = "n/a", settings: dict | None = None) -> list[dict]:
    """One NaN row per head of ``lm`` for scorer ``name``, with the ``reason`` it is undefined.

    A score that does not apply to the model has no method or settings; a probe that ran but counted
    no item (a model that retrieved no needle) keeps its ``method`` and ``settings``, so that the
    rows say what was tried.
    """
    scorer = S.get(name)
    return [dict(model=lm.key, layer=layer, head=head, score_name=name, value=float("nan"),
                 stderr=float("nan"), n=0, method=method, settings=json.dumps(settings or {}, sort_keys=True),
                 scorer_version=scorer.version, reason=reason)
            for layer in range(lm.n_layers) for head in range(lm.n_heads)]
