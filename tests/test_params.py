"""Unit tier: params validation refuses impossible values before any model loads, naming the key."""

import copy

import pytest
import yaml

from attendome.core.params import ParamsError, load_params, parse_params

BASE = yaml.safe_load(open("params.yaml"))


def _with(path: str, value):
    raw = copy.deepcopy(BASE)
    node = raw
    keys = path.split(".")
    for k in keys[:-1]:
        node = node[k]
    node[keys[-1]] = value
    return raw


def test_default_params_are_valid():
    p = load_params("params.yaml")
    assert {"smollm2-135m", "gemma3-270m", "minilm-l6", "smollm2-135m-random"} <= set(p.models)


@pytest.mark.parametrize(
    "path,value,needle",
    [
        ("atlas.thresholds.induction", {"high": 0.3, "medium": 0.5}, "atlas.thresholds.induction"),
        ("heads.probe.num_samples", -1, "heads.probe.num_samples"),
        ("heads.probe.batch_size", 0, "heads.probe.batch_size"),
        ("heads.probe.seq_len", 1, "heads.probe.seq_len"),
        ("heads.probe.nmu_samples", 5, "nmu_samples"),
        ("models.smollm2-135m-random.base", "nope", "models.smollm2-135m-random.base"),
        ("models.smollm2-135m.sha256", "abc", "sha256"),
        ("heads.retrieval.context_lengths", [], "heads.retrieval.context_lengths"),
        ("heads.retrieval.context_lengths", [256, 16], "heads.retrieval.context_lengths.1"),
        ("heads.retrieval.depths", [0.5, 1.5], "heads.retrieval.depths.1"),
        ("leaderboard.ks", [], "leaderboard.ks"),
        ("leaderboard.ks", [1, 0], "leaderboard.ks.1"),
    ],
)
def test_invalid_values_are_refused_with_the_key_named(path, value, needle):
    with pytest.raises(ParamsError, match=needle.replace(".", r"\.").replace("(", r"\(")):
        parse_params(_with(path, value))


def test_model_keys_with_dots_or_slashes_are_refused():
    raw = copy.deepcopy(BASE)
    raw["models"]["org/model.v1"] = {"source": "hf", "hf_id": "org/model"}
    with pytest.raises(ParamsError, match="no '/' or '.'"):
        parse_params(raw)


def test_unknown_model_key_lists_known_ones():
    p = load_params("params.yaml")
    with pytest.raises(ParamsError, match="smollm2-135m"):
        p.model("gpt-17")


def test_missing_thresholds_for_a_scorer():
    raw = copy.deepcopy(BASE)
    del raw["atlas"]["thresholds"]["previous_token"]
    with pytest.raises(ParamsError, match="atlas.thresholds.previous_token"):
        parse_params(raw)


def test_params_are_frozen():
    p = load_params("params.yaml")
    with pytest.raises(Exception):
        p.heads.probe.num_samples = 3


def test_unknown_scorer_is_refused_by_the_checked_loader(tmp_path):
    # the scorer registry lives in the atlas layer; the stage skeleton checks names against it
    from attendome.stage import load_checked_params

    raw = _with("heads.scorers", ["induction", "telepathy"])
    raw["atlas"]["thresholds"]["telepathy"] = {"high": 0.5, "medium": 0.2}
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    parse_params(raw)  # structurally valid
    with pytest.raises(ParamsError, match=r"heads\.scorers\.1: unknown scorer 'telepathy'"):
        load_checked_params(path)
