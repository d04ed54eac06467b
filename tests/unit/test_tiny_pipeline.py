"""Unit tier: a tiny hand-set model whose previous-token and induction heads are known; the
pipeline (probe -> hooks -> scorers -> table -> labels) must find exactly those and nothing else."""

import pytest

from attendome.atlas.labels import label_scores
from attendome.dataset import InductionHeadClassifier
from attendome.dataset.classifier import wrap_model
from attendome.atlas.score import score_model
from attendome.core.params import HeadsParams, Threshold
from tests.tiny_models import build_tiny_induction_gpt2

THR = {n: Threshold(high=0.7, medium=0.35) for n in ("induction", "previous_token", "duplicate_token")}


@pytest.fixture(scope="module")
def tiny():
    return build_tiny_induction_gpt2()


@pytest.fixture(scope="module")
def table(tiny):
    model, tok = tiny
    lm = wrap_model(model, tok, "tiny")
    params = HeadsParams.model_validate({"scorers": ["induction", "previous_token", "duplicate_token"],
                                         "probe": {"num_samples": 32, "seq_len": 8, "batch_size": 8, "seed": 1}})
    return label_scores(score_model(lm, params, progress=False), THR)


def test_pipeline_finds_the_planted_heads_and_nothing_else(table):
    high = table[table["label"] == "high"]
    found = {(r.score_name, r.layer, r.head) for r in high.itertuples()}
    assert found == {("previous_token", 0, 0), ("induction", 1, 0)}
    assert (table[table["label"] == "medium"]).empty


def test_planted_scores_are_near_one_with_small_stderr(table):
    ind = table.query("score_name == 'induction' and layer == 1 and head == 0").iloc[0]
    prev = table.query("score_name == 'previous_token' and layer == 0 and head == 0").iloc[0]
    assert ind.value > 0.95 and prev.value > 0.95
    assert ind.stderr < 0.02 and ind.n == 32


def test_seed_api_on_the_tiny_model(tiny):
    model, tok = tiny
    res = InductionHeadClassifier(device="cpu").analyze_model(model, tok, "tiny", num_of_samples=16,
                                                              seq_len=8, batch_size=4, progress=False)
    assert res["induction_scores"].shape == (2, 2)
    assert [(h["layer"], h["head"]) for h in res["classified_heads"]["high"]] == [(1, 0)]
    assert res["config"]["bos_prepended"] is True
