"""The file format of the ``attention@<model>`` stage outputs, read by every later step.

``data/attention/<model>.safetensors``: per prompt ``(n_layers * n_heads, S, S + 1)`` float16 under
its ``prompt_id`` (row ``layer * n_heads + head``, column 0 the sink), and under
``ntok/<prompt_id>`` the model's number of tokens per column ``(S + 1,)``; metadata ``info`` (JSON:
model, n_layers, n_heads, causal).
"""

from __future__ import annotations

from pathlib import Path

import torch

from attendome.core.io import load_tensors

__all__ = ["NTOK_PREFIX", "load_attention", "load_attention_info"]

NTOK_PREFIX = "ntok/"


def load_attention(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict]:
    """Read an ``attention@<model>`` output.

    Returns:
        ``(attention {prompt_id: (L*H, S, S+1) float16}, ntok {prompt_id: (S+1,) counts}, info)``.
    """
    import json

    tensors, meta = load_tensors(path)
    attn = {k: v for k, v in tensors.items() if not k.startswith(NTOK_PREFIX)}
    ntok = {k[len(NTOK_PREFIX):]: v for k, v in tensors.items() if k.startswith(NTOK_PREFIX)}
    return attn, ntok, json.loads(meta["info"])


def load_attention_info(path: str | Path) -> dict:
    """The ``info`` of an ``attention@<model>`` output (n_layers, n_heads, n_kv_heads, causal), read
    from its header alone."""
    import json

    from safetensors import safe_open

    from attendome.core.io import CorruptDataError, MissingDataError

    path = Path(path)
    if not path.exists():
        raise MissingDataError(f"{path} not found: run the stage that produces it (dvc repro)")
    try:
        with safe_open(str(path), framework="pt") as f:
            return json.loads((f.metadata() or {})["info"])
    except Exception as err:
        raise CorruptDataError(
            f"{path} has no readable attention header ({err}); delete it and rerun dvc repro"
        ) from None
