"""Score every head of one model for every requested head type.

All ``pattern`` scorers share the same forward passes over the repeated-random-token probe: each
layer's attention is reduced to per-sequence scores inside the hook and then dropped, so memory is
bounded by one layer's attention map. Per-sequence scores give the mean and its standard error.
Scores that do not apply to the model (e.g. induction in a bidirectional encoder) are NaN rows with
a reason, never zeros.
"""

from __future__ import annotations

import sys
import time
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from attendome.atlas import scorers as S
from attendome.atlas.circuits import out_proj
from attendome.atlas.copying import CopyingContext
from attendome.atlas.probes import RepeatedTokenProbe, make_repeated_tokens
from attendome.atlas.rows import nan_rows, not_applicable_reason, rows_from_samples
from attendome.atlas.scorers import validate_scores
from attendome.core.capture import attention_modules, base_model, capture_attention
from attendome.core.models import LoadedModel
from attendome.core.params import HeadsParams, ProbeParams
from attendome.core.progress import progress as progress_bar

__all__ = ["run_pattern_scorers", "score_model"]

PROBE_KINDS = ("pattern", "head_output")


@torch.no_grad()
def run_pattern_scorers(
    lm: LoadedModel,
    probe: RepeatedTokenProbe,
    names: Sequence[str],
    batch_size: int,
    progress: bool = True,
) -> dict[str, np.ndarray]:
    """Per-sequence scores of every probe scorer (``pattern`` and ``head_output`` kinds), one pass.

    ``pattern`` scorers see each layer's attention; ``head_output`` scorers (behavioural copying)
    also see the per-head attention outputs, captured by a pre-hook on the layer's output
    projection. Everything is reduced inside the hooks, layer by layer.

    Args:
        lm: the loaded model.
        probe: repeated-token sequences.
        names: scorer names.
        batch_size: sequences per forward pass.
        progress: show a progress bar.

    Returns:
        ``{name: array (num_samples, n_layers, n_heads)}``.
    """
    scorers = {n: S.get(n) for n in names}
    n_samples = probe.tokens.shape[0]
    out = {n: np.full((n_samples, lm.n_layers, lm.n_heads), np.nan, dtype=np.float64) for n in names}
    if not names:
        return out
    body = base_model(lm.model)
    device = lm.device
    state: dict = {"slice": slice(0, 0), "tokens": None, "z": {}}
    head_output = [n for n, sc in scorers.items() if sc.kind == "head_output"]
    ctx = None
    hooks = []
    if head_output:
        ctx = CopyingContext.build(lm)
        for layer, mod in enumerate(attention_modules(body)):
            def pre(_m, args, layer=layer):  # args[0]: (batch, T, heads * d_head)
                state["z"][layer] = args[0].detach()
            hooks.append(out_proj(mod).register_forward_pre_hook(pre))

    def on_layer(layer: int, attn: torch.Tensor) -> None:  # attn: (batch, heads, T, T)
        cur = state["slice"]
        for n, sc in scorers.items():
            if sc.kind == "pattern":
                val = sc.fn(attn, probe.layout)
            else:
                val = sc.fn(attn, probe.layout, z=state["z"].pop(layer), tokens=state["tokens"],
                            layer=layer, ctx=ctx)
            out[n][cur, layer, :] = val.float().cpu().numpy()

    try:
        with capture_attention(body, on_layer):
            starts = range(0, n_samples, batch_size)
            for s in progress_bar(starts, f"{lm.key}: repeated-token probe", enabled=progress, unit="batch"):
                state["slice"] = slice(s, min(s + batch_size, n_samples))
                ids = probe.tokens[state["slice"]].to(device)  # (batch, T)
                state["tokens"] = ids.cpu()
                body(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False)
    finally:
        for h in hooks:
            h.remove()
    return out


def score_model(lm: LoadedModel, params: HeadsParams, progress: bool = True) -> pd.DataFrame:
    """Score all heads of ``lm`` for every scorer in ``params.scorers``.

    Returns:
        A validated long table (:data:`attendome.core.tables.SCORE_COLUMNS`).
    """
    rows: list[dict] = []
    pattern, other = [], []
    for name in params.scorers:
        scorer = S.get(name)
        reason = not_applicable_reason(scorer, lm)
        if reason:
            rows += nan_rows(lm, name, reason)
        elif scorer.kind in PROBE_KINDS:
            pattern.append(name)
        else:
            other.append(name)

    pp: ProbeParams = params.probe
    t0 = time.perf_counter()
    if pattern:
        probe = make_repeated_tokens(lm.tokenizer, pp.num_samples, pp.seq_len, pp.seed)
        settings = dict(probe="repeated_tokens", num_samples=pp.num_samples, seq_len=pp.seq_len,
                        seed=pp.seed, prefix=list(probe.prefix), suffix=list(probe.suffix),
                        bos_prepended=probe.bos_prepended)
        samples = run_pattern_scorers(lm, probe, pattern, pp.batch_size, progress)
        for name in pattern:
            rows += rows_from_samples(lm, name, samples[name], "probe:repeated_tokens", settings)
        _log_time(lm, "+".join(pattern), t0)
    for name in other:
        t0 = time.perf_counter()
        rows += S.get(name).fn(lm, params, progress=progress)
        _log_time(lm, name, t0)
    return validate_scores(pd.DataFrame(rows))


def _log_time(lm: LoadedModel, what: str, t0: float) -> None:
    print(f"[attendome] {lm.key}: {what} took {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
