"""``InductionHeadClassifier``: the seed's API over the scorer registry."""

from __future__ import annotations

import numpy as np

from attendome.atlas.score import run_pattern_scorers
from attendome.core.models import LoadedModel, config_is_causal
from attendome.atlas.probes import make_repeated_tokens

__all__ = ["InductionHeadClassifier", "classify_scores", "wrap_model"]


def classify_scores(scores: np.ndarray, high_threshold: float = 0.7, medium_threshold: float = 0.35) -> dict:
    """Split heads into ``high`` / ``medium`` / ``low`` by induction score.

    Args:
        scores: ``(layers, heads)`` induction scores in [0, 1].
        high_threshold: ``high`` if score >= this.
        medium_threshold: ``medium`` if score >= this (and below high).

    Returns:
        ``{"high": [...], "medium": [...], "low": [...]}``, each a list of
        ``{"layer", "head", "score"}`` sorted by decreasing score.

    Raises:
        ValueError: ``medium_threshold`` above ``high_threshold``.
    """
    if medium_threshold > high_threshold:
        raise ValueError(f"medium_threshold ({medium_threshold}) must not exceed high_threshold ({high_threshold})")
    scores = np.asarray(scores, dtype=float)
    out: dict[str, list] = {"high": [], "medium": [], "low": []}
    order = np.argsort(-np.nan_to_num(scores, nan=-np.inf), axis=None)
    for flat in order:
        layer, head = np.unravel_index(flat, scores.shape)
        s = scores[layer, head]
        if np.isnan(s):
            continue
        label = "high" if s >= high_threshold else "medium" if s >= medium_threshold else "low"
        out[label].append({"layer": int(layer), "head": int(head), "score": float(s)})
    return out


def wrap_model(model, tokenizer, name: str) -> LoadedModel:
    """Wrap a plain ``transformers`` model + tokenizer for the scorers (switching to eager attention).

    A ``WhisperForConditionalGeneration`` becomes its text decoder conditioned on silence
    (:func:`attendome.core.whisper.wrap_whisper`)."""
    if getattr(model.config, "_attn_implementation", "eager") != "eager":
        model.set_attn_implementation("eager")
    unsupported: dict[str, str] = {}
    if getattr(model.config, "model_type", "") == "whisper":
        from attendome.core.whisper import WHISPER_NA, wrap_whisper

        model, unsupported = wrap_whisper(model.eval()), dict(WHISPER_NA)
    cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    n_heads = cfg.num_attention_heads
    is_causal = config_is_causal(cfg)
    return LoadedModel(key=name.replace("/", "--"), model=model.eval(), tokenizer=tokenizer, is_causal=is_causal,
                       has_unembedding=is_causal and model.get_output_embeddings() is not None,
                       n_layers=cfg.num_hidden_layers, n_heads=n_heads,
                       n_kv_heads=getattr(cfg, "num_key_value_heads", None) or n_heads,
                       d_head=getattr(cfg, "head_dim", None) or cfg.hidden_size // n_heads, name=name,
                       unsupported=unsupported)


class InductionHeadClassifier:
    """Computes induction scores and classifies attention heads (seed API).

    The induction score of a head is the mean attention from each token of the second copy of a
    repeated random sequence to the token after its first copy: range [0, 1], higher is more
    induction-like (see :func:`attendome.atlas.scorers.induction`).

    Args:
        device: device the model runs on (the model is moved there).
        seed: seed of the random token draw.
    """

    def __init__(self, device: str = "cpu", seed: int = 0):
        self.device = device
        self.seed = seed

    def analyze_model(self, model, tokenizer, model_name: str, num_of_samples: int = 2048,
                      seq_len: int = 50, batch_size: int = 16, high_threshold: float = 0.7,
                      medium_threshold: float = 0.35, progress: bool = True) -> dict:
        """Score every head of ``model`` on the repeated-token probe.

        Returns:
            dict with ``model_name``, ``induction_scores`` (``(layers, heads)`` array),
            ``induction_stderr`` (same shape), ``classified_heads`` (see :meth:`classify_heads`),
            ``num_layers``, ``num_heads`` and ``config`` (probe settings).
        """
        if num_of_samples < 1 or batch_size < 1 or seq_len < 2:
            raise ValueError("num_of_samples and batch_size must be >= 1 and seq_len >= 2")
        if not hasattr(model, "config"):
            raise TypeError("model must be a transformers model")
        if getattr(model, "hf_device_map", None) is None:
            model = model.to(self.device)
        lm = wrap_model(model, tokenizer, model_name)
        probe = make_repeated_tokens(tokenizer, num_of_samples, seq_len, self.seed)
        samples = run_pattern_scorers(lm, probe, ["induction"], batch_size, progress)["induction"]
        scores = samples.mean(axis=0)
        stderr = (
            samples.std(axis=0, ddof=1) / np.sqrt(num_of_samples)
            if num_of_samples > 1
            else np.full_like(scores, np.nan)
        )
        if not lm.is_causal:
            scores = np.full_like(scores, np.nan)
            stderr = np.full_like(scores, np.nan)
        return {
            "model_name": model_name,
            "induction_scores": scores,
            "induction_stderr": stderr,
            "classified_heads": self.classify_heads(scores, high_threshold, medium_threshold),
            "num_layers": lm.n_layers,
            "num_heads": lm.n_heads,
            "config": {
                "num_of_samples": num_of_samples,
                "seq_len": seq_len,
                "batch_size": batch_size,
                "seed": self.seed,
                "bos_prepended": probe.bos_prepended,
                "high_threshold": high_threshold,
                "medium_threshold": medium_threshold,
                "is_causal": lm.is_causal,
            },
        }

    def classify_heads(self, scores, high_threshold: float = 0.7, medium_threshold: float = 0.35) -> dict:
        """Seed API: see :func:`classify_scores`."""
        return classify_scores(scores, high_threshold, medium_threshold)
