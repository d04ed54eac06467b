"""DVC stage `features`: the frozen encoder's segment features for every prompt."""

import json

from attendome.core.io import read_parquet
from attendome.prep.inputs import load_encoder
from attendome.core.io import save_tensors
from attendome.prep.segattn import segment_features
from attendome.stage import run_stage, say, stage_args


def main() -> None:
    params, _ = stage_args(__doc__)
    prompts = read_parquet("data/corpus/prompts.parquet")
    segments = read_parquet("data/corpus/segments.parquet")
    enc = load_encoder(params)
    try:
        feats = segment_features(enc, prompts, segments, params.features.layer)
    finally:
        enc.release()
    meta = {"info": json.dumps(dict(encoder=params.features.encoder, layer=params.features.layer,
                                    pooling="mean over the segment's tokens"))}
    save_tensors(feats, "data/features/features.safetensors", meta)
    d = next(iter(feats.values())).shape[1]
    say(f"features: {params.features.encoder} layer {params.features.layer}, {len(feats)} prompts x {d}-d "
        "-> data/features/features.safetensors")


if __name__ == "__main__":
    run_stage(main)
