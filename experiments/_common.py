"""Helpers shared by the experiment scripts (not part of the pipeline: no stage depends on them)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def pin_cpu() -> None:
    """Put the project root on ``sys.path`` and pin the CPU code paths of the training stages
    (:data:`attendome.REPRODUCIBLE_CPU`) before torch loads, so a script's numbers match the stages'."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from attendome import REPRODUCIBLE_CPU

    for k, v in REPRODUCIBLE_CPU.items():
        os.environ.setdefault(k, v)


def induction_mass(per, heads, n_heads: int) -> tuple[float, float]:
    """Mean attention mass on the induction target over ``heads`` (rows ``layer, head``) on held-out
    repeat probes: ``(predicted, true)``, from :func:`attendome.clone.evaluate.evaluate_heads` rows
    (``head_index, method, kind, metric, value``). In [0, 1], higher = more induction-like; NaN when
    ``heads`` is empty."""
    import numpy as np

    idx = {int(r.layer) * n_heads + int(r.head) for r in heads.itertuples()}
    sub = per[(per.kind == "repeat") & (per.metric == "ind_mass") & per.head_index.isin(idx)]
    if sub.empty:
        return np.nan, np.nan
    m = sub.groupby("method")["value"].mean()
    return float(m.get("model", np.nan)), float(m.get("true", np.nan))


def take_prompts(data, n: int, seed: int = 0):
    """``n`` training prompts of a :class:`~attendome.clone.data.SegmentData` for a learning curve: a
    seeded random subset that keeps the share of each prompt kind (prose / repeat probes), nested
    (the subset for a smaller ``n`` lies inside the one for a larger ``n``).

    Not the first ``n``: the training split lists prose first and the generated repeat probes last,
    so a prefix would hold no repeat probe at all, and a learning curve would mix "less data" with
    "no induction examples" (the committed curve of an earlier round did).
    """
    import numpy as np

    N = len(data.prompt_ids)
    if n >= N:
        return data
    kinds = np.asarray(data.kinds if data.kinds else ["prose"] * N)
    frac = n / N
    pick = []
    for kind in sorted(set(kinds)):
        idx = np.flatnonzero(kinds == kind)
        order = np.random.default_rng([seed, len(idx)]).permutation(idx)
        pick += order[:int(round(frac * len(idx)))].tolist()
    return _subset(data, sorted(pick))


def split_prompts(data, k: int, seed: int = 0) -> list:
    """The training prompts of a :class:`~attendome.clone.data.SegmentData` cut into ``k`` disjoint
    parts of (nearly) equal size, each keeping each prompt kind's share (seeded): part ``i`` holds
    the ``i``-th of ``k`` near-equal slices of a seeded permutation of every kind's prompts. Every
    prompt is in exactly one part (``tests/unit/test_experiment_reports.py``)."""
    import numpy as np

    if not 1 <= k <= len(data.prompt_ids):
        raise ValueError(f"cannot cut {len(data.prompt_ids)} prompts into {k} parts")
    kinds = np.asarray(data.kinds if data.kinds else ["prose"] * len(data.prompt_ids))
    parts: list[list[int]] = [[] for _ in range(k)]
    for kind in sorted(set(kinds)):
        idx = np.flatnonzero(kinds == kind)
        order = np.random.default_rng([seed, len(idx), k]).permutation(idx)
        for i, chunk in enumerate(np.array_split(order, k)):
            parts[i] += chunk.tolist()
    return [_subset(data, sorted(p)) for p in parts]


def _subset(data, pick: list[int]):
    """The prompts ``pick`` (indices, in order) of a :class:`~attendome.clone.data.SegmentData`."""
    from attendome.clone.data import SegmentData

    def sub(xs):
        return [xs[i] for i in pick] if xs else xs

    return SegmentData(sub(data.prompt_ids), sub(data.Z), sub(data.A), data.causal, sub(data.logn), sub(data.kinds),
                       sub(data.ind), sub(data.dup), sub(data.content))
