"""DVC stage `attention@<key>`: every head's segment attention on every prompt."""

import argparse
import json

from attendome.io import read_parquet
from attendome.models import load_model
from attendome.params import load_params
from attendome.segattn import save_tensors, segment_attention


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("model")
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args()
    params = load_params(args.params)
    params.model(args.model)
    prompts = read_parquet("data/corpus/prompts.parquet")
    segments = read_parquet("data/corpus/segments.parquet")
    lm = load_model(args.model, params)
    try:
        maps = segment_attention(lm, prompts, segments)
        info = dict(model=args.model, n_layers=lm.n_layers, n_heads=lm.n_heads, causal=lm.is_causal,
                    rows="layer * n_heads + head", columns="0 = sink (special tokens), 1 + J = segment J")
    finally:
        lm.release()
    save_tensors(maps, f"data/attention/{args.model}.safetensors", {"info": json.dumps(info)})


if __name__ == "__main__":
    main()
