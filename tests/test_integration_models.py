"""Integration tier: the real bundled models (loaded once per session)."""

import numpy as np
import pytest

from attendome.heads import score_model
from attendome.models import load_model
from attendome.params import HeadsParams, load_params

pytestmark = pytest.mark.integration

PROBE = HeadsParams.model_validate({"probe": {"num_samples": 16, "seq_len": 50, "batch_size": 8, "seed": 0}})


@pytest.fixture(scope="session")
def params():
    return load_params("params.yaml")


def _scores(params, key):
    lm = load_model(key, params)
    try:
        return lm, score_model(lm, PROBE, progress=False)
    finally:
        lm.release()


@pytest.fixture(scope="session")
def smollm(params):
    return _scores(params, "smollm2-135m")


@pytest.fixture(scope="session")
def minilm(params):
    return _scores(params, "minilm-l6")


@pytest.fixture(scope="session")
def random_smollm(params):
    return _scores(params, "smollm2-135m-random")


def test_smollm2_geometry_and_bos(smollm):
    lm, df = smollm
    assert (lm.n_layers, lm.n_heads, lm.n_kv_heads) == (30, 9, 3)
    assert lm.is_causal and lm.has_unembedding
    assert len(df) == 30 * 9 * 3
    assert '"bos_prepended": true' in df["settings"].iloc[0]


def test_smollm2_has_induction_heads_in_its_upper_middle_layers(smollm):
    _, df = smollm
    ind = df[df.score_name == "induction"].sort_values("value", ascending=False)
    assert ind["value"].iloc[0] > 0.7
    assert (ind["value"] > 0.35).sum() >= 4
    assert 12 <= ind["layer"].iloc[0] <= 24  # the literature's "middle-to-late" band
    assert (ind["stderr"] < 0.05).all()


def test_minilm_is_an_encoder_with_previous_token_heads(minilm):
    lm, df = minilm
    assert not lm.is_causal and not lm.has_unembedding
    ind = df[df.score_name == "induction"]
    assert ind["value"].isna().all() and ind["reason"].str.contains("bidirectional").all()
    prev = df[df.score_name == "previous_token"]
    assert prev["value"].max() > 0.7


def test_random_init_negative_control_has_no_head_above_0_1(random_smollm):
    _, df = random_smollm
    assert df["value"].max() < 0.1


def test_same_params_give_same_numbers(params, smollm):
    _, df = smollm
    _, again = _scores(params, "smollm2-135m")
    np.testing.assert_allclose(df["value"].to_numpy(), again["value"].to_numpy(), atol=1e-6)
