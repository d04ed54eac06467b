"""Benchmarks (pytest-benchmark; measured, never asserted on time).

Run: ``pytest tests/benchmarks --benchmark-enable --benchmark-columns=mean,stddev,rounds``.
Compares scoring all heads of SmolLM2-135M on the repeated-token probe (eager attention + hooks)
with a plain forward pass over the same tokens (sdpa, no attention output).
"""

import pytest
import torch

from attendome.core.capture import base_model
from attendome.atlas.score import run_pattern_scorers
from attendome.core.models import load_model
from attendome.core.params import load_params
from attendome.atlas.probes import make_repeated_tokens

pytestmark = pytest.mark.integration
N, L, B = 16, 50, 16


@pytest.fixture(scope="module")
def lm():
    m = load_model("smollm2-135m", load_params("params.yaml"))
    yield m
    m.release()


@pytest.fixture(scope="module")
def probe(lm):
    return make_repeated_tokens(lm.tokenizer, N, L, 0)


def test_bench_score_repeated_token_probe(benchmark, lm, probe):
    lm.model.set_attn_implementation("eager")
    names = ["induction", "previous_token", "duplicate_token"]
    out = benchmark.pedantic(run_pattern_scorers, args=(lm, probe, names, B, False), rounds=3, iterations=1)
    assert out["induction"].shape == (N, lm.n_layers, lm.n_heads)


def test_bench_plain_sdpa_forward_reference(benchmark, lm, probe):
    lm.model.set_attn_implementation("sdpa")
    body = base_model(lm.model)

    @torch.no_grad()
    def fwd():
        for s in range(0, N, B):
            ids = probe.tokens[s:s + B]
            body(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False)

    try:
        benchmark.pedantic(fwd, rounds=3, iterations=1)
    finally:
        lm.model.set_attn_implementation("eager")


def test_bench_copying_ov_all_heads(benchmark, lm):
    from attendome.atlas.circuits import ov_weights
    from attendome.atlas.copying import ov_eigen_scores

    out = benchmark.pedantic(lambda: ov_eigen_scores(ov_weights(lm)), rounds=3, iterations=1)
    assert out.shape == (lm.n_layers, lm.n_heads)


def test_bench_retrieval_teacher_forced_one_512_token_trial(benchmark, lm):
    from attendome.core.params import RetrievalParams
    from attendome.atlas.retrieval import make_trials, teacher_forced_hits

    lm.model.set_attn_implementation("eager")
    trial = make_trials(lm.tokenizer, RetrievalParams(context_lengths=(512,), depths=(0.5,), needles_per_cell=1))[0]
    benchmark.pedantic(lambda: teacher_forced_hits(lm, trial), rounds=3, iterations=1)
