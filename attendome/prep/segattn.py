"""Segment-level attention of every head, and segment features of the frozen encoder.

Both stream prompts one at a time: a prompt's attention is pooled onto its segments inside the
layer hooks (:mod:`attendome.prep.align`), so at no point are all prompts x layers x heads token maps held.
Stored per prompt, keyed by ``prompt_id``, in safetensors (no pickle):

* attention: ``(n_layers * n_heads, S, S + 1)`` float16, row ``layer * n_heads + head``, column 0
  the sink (special tokens), rows summing to 1; beside it, under ``ntok/<prompt_id>``, the model's
  number of tokens per column ``(S + 1,)`` (column 0: special tokens), the known input of the
  cloners' token-count bias;
* features: ``(S, d)`` float32, the mean of the encoder's hidden states (``features.layer``) over
  each segment's tokens (special tokens excluded).
"""

from __future__ import annotations


import pandas as pd
import torch

from attendome.prep.align import pool_attention, segment_map, token_spans
from attendome.core.capture import base_model, capture_attention
from attendome.core.progress import progress as progress_bar
from attendome.prep.store import NTOK_PREFIX

__all__ = ["prompt_segments", "segment_attention", "segment_features"]


def prompt_segments(segments: pd.DataFrame) -> dict[str, list[tuple[int, int]]]:
    """``{prompt_id: [(char_start, char_end), ...]}`` in segment order."""
    out: dict[str, list[tuple[int, int]]] = {}
    for r in segments.sort_values(["prompt_id", "seg"]).itertuples(index=False):
        out.setdefault(r.prompt_id, []).append((int(r.char_start), int(r.char_end)))
    return out


@torch.no_grad()
def segment_attention(lm, prompts: pd.DataFrame, segments: pd.DataFrame, progress: bool = True,
                      batch: int = 8) -> dict[str, torch.Tensor]:
    """Pooled attention of every head on every prompt.

    Prompts run ``batch`` at a time, grouped by token length and right-padded; the padding is masked
    (and, in a causal model, lies after every real token), so each prompt's attention over its own
    tokens is what it would be alone, up to float rounding.

    Returns:
        ``{prompt_id: (n_layers * n_heads, S, S + 1) float16}`` and, for every prompt,
        ``{"ntok/<prompt_id>": (S + 1,) int32}`` token counts per column.
    """
    body = base_model(lm.model)
    segs = prompt_segments(segments)
    rows = list(prompts.itertuples(index=False))
    toks = [token_spans(lm.tokenizer, r.text) for r in rows]
    smaps = [segment_map(r.text, t, segs[r.prompt_id]) for r, t in zip(rows, toks)]
    order = sorted(range(len(rows)), key=lambda i: (len(toks[i].ids), i))
    groups = [order[a:a + max(1, batch)] for a in range(0, len(order), max(1, batch))]
    pad = lm.tokenizer.pad_token_id if getattr(lm.tokenizer, "pad_token_id", None) is not None else 0
    pooled: dict[int, torch.Tensor] = {}
    state: dict = {}

    def on_layer(layer: int, attn: torch.Tensor) -> None:  # (B, H, T, T)
        for b, i in enumerate(state["group"]):
            n = len(toks[i].ids)
            pooled[i][layer] = pool_attention(attn[b, :, :n, :n], smaps[i])

    with capture_attention(body, on_layer):
        for group in progress_bar(groups, f"{lm.key}: segment attention ({len(rows)} prompts)", enabled=progress,
                                  unit="batch"):
            T = max(len(toks[i].ids) for i in group)
            ids = torch.full((len(group), T), pad, dtype=torch.long)
            mask = torch.zeros(len(group), T, dtype=torch.long)
            for b, i in enumerate(group):
                n = len(toks[i].ids)
                ids[b, :n] = torch.tensor(toks[i].ids)
                mask[b, :n] = 1
                S = len(smaps[i].last_token)
                pooled[i] = torch.zeros(lm.n_layers, lm.n_heads, S, S + 1)
            state["group"] = group
            body(input_ids=ids.to(lm.device), attention_mask=mask.to(lm.device), use_cache=False)
    out: dict[str, torch.Tensor] = {}
    for i, r in enumerate(rows):
        S = len(smaps[i].last_token)
        out[r.prompt_id] = pooled.pop(i).reshape(lm.n_layers * lm.n_heads, S, S + 1).half()
        out[NTOK_PREFIX + r.prompt_id] = torch.bincount(torch.as_tensor(smaps[i].seg_of_token + 1),
                                                        minlength=S + 1).to(torch.int32)
    return out


@torch.no_grad()
def segment_features(enc, prompts: pd.DataFrame, segments: pd.DataFrame, layer: int = -1,
                     progress: bool = True) -> dict[str, torch.Tensor]:
    """Mean encoder hidden state per segment.

    Returns:
        ``{prompt_id: (S, d) float32}``.
    """
    body = base_model(enc.model)
    segs = prompt_segments(segments)
    out = {}
    for r in progress_bar(list(prompts.itertuples(index=False)), f"{enc.key}: features", enabled=progress):
        tok = token_spans(enc.tokenizer, r.text)
        smap = segment_map(r.text, tok, segs[r.prompt_id])
        ids = torch.tensor([tok.ids], device=enc.device)
        hs = body(input_ids=ids, attention_mask=torch.ones_like(ids), output_hidden_states=True).hidden_states
        h = hs[layer][0].float().cpu()  # (T, d)
        S = len(segs[r.prompt_id])
        seg = torch.as_tensor(smap.seg_of_token)
        keep = seg >= 0
        sums = torch.zeros(S, h.shape[1]).index_add_(0, seg[keep], h[keep])
        counts = torch.bincount(seg[keep], minlength=S).clamp_min(1).unsqueeze(1)
        out[r.prompt_id] = sums / counts
    return out
