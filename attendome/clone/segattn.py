"""Segment-level attention of every head, and segment features of the frozen encoder.

Both stream prompts one at a time: a prompt's attention is pooled onto its segments inside the
layer hooks (:mod:`attendome.clone.align`), so at no point are all prompts x layers x heads token maps held.
Stored per prompt, keyed by ``prompt_id``, in safetensors (no pickle):

* attention: ``(n_layers * n_heads, S, S + 1)`` float16, row ``layer * n_heads + head``, column 0
  the sink (special tokens), rows summing to 1;
* features: ``(S, d)`` float32, the mean of the encoder's hidden states (``features.layer``) over
  each segment's tokens (special tokens excluded).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from attendome.clone.align import pool_attention, segment_map, token_spans
from attendome.core.capture import base_model, capture_attention
from attendome.core.io import atomic_path

__all__ = ["prompt_segments", "segment_attention", "segment_features", "save_tensors", "load_tensors"]


def prompt_segments(segments: pd.DataFrame) -> dict[str, list[tuple[int, int]]]:
    """``{prompt_id: [(char_start, char_end), ...]}`` in segment order."""
    out: dict[str, list[tuple[int, int]]] = {}
    for r in segments.sort_values(["prompt_id", "seg"]).itertuples(index=False):
        out.setdefault(r.prompt_id, []).append((int(r.char_start), int(r.char_end)))
    return out


@torch.no_grad()
def segment_attention(lm, prompts: pd.DataFrame, segments: pd.DataFrame, progress: bool = True) -> dict[str, torch.Tensor]:
    """Pooled attention of every head on every prompt.

    Returns:
        ``{prompt_id: (n_layers * n_heads, S, S + 1) float16}``.
    """
    body = base_model(lm.model)
    segs = prompt_segments(segments)
    out: dict[str, torch.Tensor] = {}
    state: dict = {}

    def on_layer(layer: int, attn: torch.Tensor) -> None:  # (1, H, T, T)
        state["buf"][layer] = pool_attention(attn[0], state["smap"])

    with capture_attention(body, on_layer):
        for r in tqdm(list(prompts.itertuples(index=False)), desc=f"{lm.key}: segment attention",
                      disable=not progress):
            tok = token_spans(lm.tokenizer, r.text)
            state["smap"] = segment_map(r.text, tok, segs[r.prompt_id])
            S = len(segs[r.prompt_id])
            state["buf"] = torch.zeros(lm.n_layers, lm.n_heads, S, S + 1)
            ids = torch.tensor([tok.ids], device=lm.device)
            body(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False)
            out[r.prompt_id] = state["buf"].reshape(lm.n_layers * lm.n_heads, S, S + 1).half()
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
    for r in tqdm(list(prompts.itertuples(index=False)), desc=f"{enc.key}: features", disable=not progress):
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


def save_tensors(tensors: dict[str, torch.Tensor], path: str | Path, metadata: dict[str, str] | None = None) -> None:
    """Write tensors to safetensors atomically."""
    from safetensors.torch import save_file

    with atomic_path(path) as tmp:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata=metadata or {})


def load_tensors(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read a safetensors file; a missing or corrupt file gets an error that names it."""
    from safetensors import safe_open

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run the stage that produces it (dvc repro)")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            return {k: f.get_tensor(k) for k in f.keys()}, meta
    except Exception as err:
        raise ValueError(f"{path} is not a readable safetensors file ({err}); delete it and rerun dvc repro") from None
