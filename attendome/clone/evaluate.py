"""Phase 1 evaluation on held-out prompts.

Per head, KL and MSE for the predictor and four baselines on the same rows: ``uniform`` over the
valid columns, ``bos`` (all mass on the sink), ``previous`` (all mass on the previous segment; the
sink for the first segment), and ``positional`` (the head's own mean attention by absolute
(row, column) position on the training prompts). To keep KL finite for one-hot baselines every
prediction is smoothed as ``(1 - eps) A_hat + eps * uniform`` with ``eps = 1e-4`` before scoring
(the same for all methods). Metrics are given over all held-out prompts (``kind = all``) and
separately for prose (``pydoc``/user text) and generated repeat probes (``repeat``). On repeat
probes the *target mass* is the attention on the induction target (the segment after the earlier
copy of the query segment) and on the duplicate target (the earlier copy itself), predicted and
true, averaged over the queries that have one.

KL: >= 0, lower is better, 0 = perfect. MSE: mean over valid (I, column) entries of the squared
difference, in [0, 1], lower is better. Target mass: [0, 1].
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from attendome.clone.data import SegmentData, pad_batch, sorted_batches
from attendome.clone.losses import kl_rows
from attendome.clone.positional import BASELINES, baseline_logprobs


__all__ = ["EPS", "KINDS", "evaluate_heads"]

EPS = 1e-4
KINDS = ("all", "prose", "repeat")


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
