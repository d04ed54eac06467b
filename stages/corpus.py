"""DVC stage `corpus`: prompt sets (train / held-out by document) and their shared segments."""

from attendome.prep.align import segment_prompts
from attendome.prep.corpus import build_prompts, check_disjoint
from attendome.core.io import write_json, write_parquet
from attendome.core.models import load_tokenizer
from attendome.prep.inputs import corpus_manifest, tokenizers_in_play
from attendome.stage import run_stage, say, stage_args


def main() -> None:
    params, _ = stage_args(__doc__)
    prompts = build_prompts(params.corpus)
    toks = tokenizers_in_play(params, load_tokenizer)
    kept, segments, dropped = segment_prompts(prompts, toks, params.corpus.max_tokens, params.corpus.min_segments)
    check_disjoint(kept)
    write_parquet(kept, "data/corpus/prompts.parquet")
    write_parquet(segments, "data/corpus/segments.parquet")
    manifest = corpus_manifest(params, prompts, kept, segments, dropped, list(toks))
    write_json(manifest, "data/corpus/manifest.json")
    say(f"corpus: {len(toks)} tokenizers; prompts train/val/heldout "
        f"{manifest['train']['prompts']}/{manifest['val']['prompts']}/{manifest['heldout']['prompts']}, "
        f"{len(segments)} segments, dropped {dropped} -> data/corpus")


if __name__ == "__main__":
    run_stage(main)
