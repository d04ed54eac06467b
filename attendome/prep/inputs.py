"""Inputs of Phase 1 (stages ``corpus`` and ``features``): the tokenizers in play, the frozen encoder,
the corpus manifest."""

from __future__ import annotations

from typing import Callable

import pandas as pd

from attendome.core.params import Params
from attendome.core.sources import origin

__all__ = ["encoder_key", "tokenizers_in_play", "load_encoder", "corpus_manifest"]


def encoder_key(params: Params) -> str:
    """Name of the feature encoder (a catalogue key, or a Hugging Face / local id)."""
    return params.features.encoder


def tokenizers_in_play(params: Params, load_tokenizer: Callable) -> dict:
    """``{name: tokenizer}`` for every model run (``params.models``) and the encoder.

    A ``random_init`` model shares its base's tokenizer, which is loaded once (under the base's key).
    """
    toks = {}
    for key in params.models:
        src = origin(key, params)[0]
        if src not in toks:
            toks[src] = load_tokenizer(src, params)
    enc = encoder_key(params)
    if enc not in toks:
        if enc in params.catalog:
            toks[enc] = load_tokenizer(enc, params)
        else:
            from attendome.core.models import load_tokenizer as load_any, params_for_name

            toks[f"encoder:{enc}"] = load_any(*params_for_name(params, enc, device="cpu"))
    return toks


def load_encoder(params: Params):
    """Load the feature encoder as a :class:`~attendome.core.models.LoadedModel`."""
    from attendome.core.models import check_params_against_config, load_model, params_for_name

    enc = encoder_key(params)
    key, p = (enc, params) if enc in params.catalog else params_for_name(params, enc, device="cpu")
    check_params_against_config(key, p, features=True)
    return load_model(key, p)


def corpus_manifest(params: Params, prompts: pd.DataFrame, kept: pd.DataFrame, segments: pd.DataFrame,
                    dropped: dict, tokenizers: list[str]) -> dict:
    """Counts, hashes and settings of the corpus (``data/corpus/manifest.json``)."""
    from attendome.prep.corpus import text_sha256

    out = {"settings": params.corpus.model_dump(), "tokenizers_in_play": tokenizers,
           "prompts_built": len(prompts), "prompts_kept": len(kept), "dropped": dropped,
           "segments": len(segments)}
    for split, g in kept.groupby("split"):
        out[split] = {"prompts": len(g), "documents": int(g.doc_id.nunique()),
                      "segments": int(g.n_segments.sum()),
                      "sha256": text_sha256("\n".join(sorted(g.text_sha256)))}
    return out
