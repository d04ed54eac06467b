"""Unit tier: the embedding-method registry and its wiring in dvc.yaml (a method added with one
registered function and two dvc.yaml paths; nothing else)."""

import pytest
import yaml

from attendome.board.run import METHODS
from attendome.space.methods import METHODS as REGISTRY
from attendome.space.methods import get_method, register_method


def _stage(name):
    return yaml.safe_load(open("dvc.yaml"))["stages"][name]


def test_every_built_method_is_an_output_of_baselines_and_a_metric_of_the_leaderboard():
    outs = set(_stage("baselines")["outs"])
    metrics = {next(iter(m)) if isinstance(m, dict) else m for m in _stage("leaderboard")["metrics"]}
    for name, m in REGISTRY.items():
        if m.build is not None:
            assert f"data/embeddings/{name}.parquet" in outs, name
        assert f"metrics/leaderboard/{name}.json" in metrics, name
    assert METHODS == tuple(REGISTRY)


def test_the_registry_knows_its_kinds_and_refuses_duplicates():
    assert {m.kind for m in REGISTRY.values()} >= {"learned", "similarity", "hand-crafted", "trivial", "chance"}
    assert [n for n, m in REGISTRY.items() if m.leave_out_mechanism] == ["scores"]
    assert get_method("universal").build is None  # written by the embed stage
    with pytest.raises(ValueError, match="twice"):
        register_method("rsa", kind="similarity")(lambda inp: None)
    with pytest.raises(KeyError, match="registered"):
        get_method("telepathy")
