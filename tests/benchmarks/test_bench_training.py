"""Benchmarks of Phase 1/2 training (pytest-benchmark; measured, not asserted).

Run: ``pytest tests/benchmarks --benchmark-enable -k training --benchmark-columns=mean,rounds``.
The batched trainer fits all heads of a model as one module; the reference loop fits the same
heads one at a time (one module per head) on the same data and settings.
"""

import pytest

from attendome.clone.data import SegmentData
from attendome.clone.model import train_cloner
from attendome.core.params import EmbedParams, TrainParams
from attendome.space.universal import train_universal
from tests.unit.test_leaderboard import planted_models
from tests.unit.test_phase1 import synthetic_data

N_HEADS = 32
TP = TrainParams(rank=8, epochs=2, position_dims=0, batch_prompts=16, position_components=0)


@pytest.fixture(scope="module")
def data():
    d = synthetic_data(64, N_HEADS, d=32)
    return SegmentData(d.prompt_ids[:48], d.Z[:48], d.A[:48], True), SegmentData(
        d.prompt_ids[48:], d.Z[48:], d.A[48:], True
    )


def test_bench_training_clone_all_heads_batched(benchmark, data):
    train, val = data
    benchmark.pedantic(lambda: train_cloner(train, val, TP, N_HEADS, seed=0, progress=False), rounds=3, iterations=1)


def test_bench_training_clone_one_head_at_a_time(benchmark, data):
    train, val = data

    def loop():
        for h in range(N_HEADS):
            one = SegmentData(train.prompt_ids, train.Z, [a[h : h + 1] for a in train.A], True)
            one_val = SegmentData(val.prompt_ids, val.Z, [a[h : h + 1] for a in val.A], True)
            train_cloner(one, one_val, TP, 1, seed=h, progress=False)

    benchmark.pedantic(loop, rounds=1, iterations=1)


def test_bench_training_universal_one_epoch(benchmark):
    models, _ = planted_models(n_models=4, heads_per_type=8, n_prompts=80, d=32)
    tp = EmbedParams(dim=32, rank=16, epochs=1, heads_per_batch=64, position_dims=0, position_components=0)
    benchmark.pedantic(lambda: train_universal(models, tp, seed=0, progress=False), rounds=3, iterations=1)
