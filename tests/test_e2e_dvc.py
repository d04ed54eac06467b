"""End-to-end tier: `dvc repro` in a temporary git repo on tiny params; a second repro does nothing."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[1]
TINY_MODELS = ["smollm2-135m", "minilm-l6"]


def _run(cmd, cwd, env):
    res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    assert res.returncode == 0, f"{' '.join(cmd)} failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    return res.stdout + res.stderr


def tiny_params() -> dict:
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["models"] = {k: raw["models"][k] for k in TINY_MODELS}
    raw["heads"]["probe"].update(num_samples=4, seq_len=12, batch_size=4)
    raw["heads"]["retrieval"].update(context_lengths=[64], depths=[0.5], needles_per_cell=1, max_new_tokens=4)
    raw["corpus"].update(prompt_words=12, max_prompts_per_doc=1, n_generated=8)
    raw["clone"].update(epochs=2)
    raw["embed"].update(epochs=2, transfer_model="minilm-l6")
    return raw


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    d = tmp_path_factory.mktemp("e2e")
    for item in ["attendome", "stages", "dvc.yaml", "pyproject.toml", ".gitignore", ".dvcignore"]:
        src = ROOT / item
        if src.is_dir():
            shutil.copytree(src, d / item, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy(src, d / item)
    (d / "params.yaml").write_text(yaml.safe_dump(tiny_params(), sort_keys=False))
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
               PYTHONPATH=str(d), GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@example.com",
               GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@example.com")
    _run(["git", "init", "-q"], d, env)
    _run([sys.executable, "-m", "dvc", "init", "-q"], d, env)
    _run([sys.executable, "-m", "dvc", "config", "core.analytics", "false"], d, env)
    _run(["git", "add", "-A"], d, env)
    _run(["git", "commit", "-qm", "init"], d, env)
    first = _run([sys.executable, "-m", "dvc", "repro"], d, env)
    return d, env, first


def test_repro_produces_the_atlas(repo):
    d, _, first = repo
    for key in TINY_MODELS:
        assert f"heads@{key}" in first
        t = pd.read_parquet(d / f"data/heads/{key}.parquet")
        assert {"model", "layer", "head", "score_name", "value", "stderr"} <= set(t.columns)
        assert json.loads((d / f"metrics/heads/{key}.json").read_text())["counts"]
    atlas = pd.read_parquet(d / "data/atlas.parquet")
    assert set(atlas["model"]) == set(TINY_MODELS)
    assert set(atlas["label"]) <= {"high", "medium", "low", "n/a"}
    m = json.loads((d / "metrics/atlas.json").read_text())
    assert set(m["models"]) == set(TINY_MODELS)
    pngs = sorted(p.name for p in (d / "plots/atlas").glob("*.png"))
    n_types = len(tiny_params()["heads"]["scorers"])
    assert "smollm2-135m__induction.png" in pngs and len(pngs) == 2 * n_types


def test_phase1_and_phase2_outputs(repo):
    d, _, first = repo
    manifest = json.loads((d / "data/corpus/manifest.json").read_text())
    assert manifest["train"]["prompts"] > 0 and manifest["heldout"]["prompts"] > 0
    for key in TINY_MODELS:
        c = json.loads((d / f"metrics/clone/{key}.json").read_text())
        assert {"model", "uniform", "bos", "previous", "positional"} <= set(c["heldout"])
        assert (d / f"models/cloners/{key}.safetensors").stat().st_size > 0
    board = json.loads((d / "metrics/leaderboard.json").read_text())
    assert set(board["methods"]) == {"universal", "random", "scores", "rsa", "cloner"}
    assert board["methods"]["universal"]["reconstruction_mse"] is not None
    emb = pd.read_parquet(d / "data/embeddings/universal.parquet")
    assert len(emb) == 30 * 9 + 6 * 12 and "e_31" in emb.columns
    assert json.loads((d / "metrics/embed.json").read_text())["transfer"]["model"] == "minilm-l6"
    assert (d / "mlflow.db").exists()
    for png in ("embeddings_pca.png", "retrieval_at_k.png", "outlier_scores.png"):
        assert (d / "plots/leaderboard" / png).stat().st_size > 0


def test_second_repro_does_nothing(repo):
    d, env, _ = repo
    out = _run([sys.executable, "-m", "dvc", "repro"], d, env)
    assert "Running stage" not in out
    status = _run([sys.executable, "-m", "dvc", "status"], d, env)
    assert "up to date" in status.lower()


def test_metrics_show_reads_the_metrics(repo):
    d, env, _ = repo
    out = _run([sys.executable, "-m", "dvc", "metrics", "show", "--json"], d, env)
    assert "metrics/atlas.json" in out and "metrics/leaderboard.json" in out


def test_exp_run_with_a_changed_param_and_exp_show(repo):
    d, env, _ = repo
    _run(["git", "add", "-A"], d, env)
    _run(["git", "commit", "-qm", "baseline run"], d, env)
    _run([sys.executable, "-m", "dvc", "exp", "run", "-S", "embed.dim=8"], d, env)
    res = subprocess.run([sys.executable, "-m", "dvc", "exp", "show", "--json"], cwd=d, env=env,
                         capture_output=True, text=True, check=True)

    def dims(node):
        if isinstance(node, dict):
            if isinstance(node.get("embed"), dict) and "dim" in node["embed"]:
                yield node["embed"]["dim"]
            for v in node.values():
                yield from dims(v)
        elif isinstance(node, list):
            for v in node:
                yield from dims(v)

    assert {8, 32} <= set(dims(json.loads(res.stdout)))
