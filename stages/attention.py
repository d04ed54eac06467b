"""DVC stage `attention@<key>`: every head's segment attention on every prompt."""

import json

from attendome.core.io import read_parquet
from attendome.core.models import load_model
from attendome.core.io import save_tensors
from attendome.prep.segattn import segment_attention
from attendome.stage import run_stage, say, stage_args


def main() -> None:
    params, key = stage_args(__doc__, per_model=True)
    prompts = read_parquet("data/corpus/prompts.parquet")
    segments = read_parquet("data/corpus/segments.parquet")
    lm = load_model(key, params)
    try:
        maps = segment_attention(lm, prompts, segments, batch=params.runtime.attention_batch)
        info = dict(model=key, n_layers=lm.n_layers, n_heads=lm.n_heads, n_kv_heads=lm.n_kv_heads, causal=lm.is_causal,
                    rows="layer * n_heads + head", columns="0 = sink (special tokens), 1 + J = segment J")
    finally:
        lm.release()
    save_tensors(maps, f"data/attention/{key}.safetensors", {"info": json.dumps(info)})
    say(f"attention@{key}: {info['n_layers'] * info['n_heads']} heads x {len(prompts)} prompts "
        f"-> data/attention/{key}.safetensors")


if __name__ == "__main__":
    run_stage(main)
