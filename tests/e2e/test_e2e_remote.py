"""End-to-end tier: results shared through a DVC remote on a real S3-compatible server.

moto's S3 server is started here on a local port. Machine A reproduces a stage on tiny params and
pushes its outputs and DVC's run cache; machine B, a fresh clone of the same commit, pulls the run
cache, and ``dvc repro`` of that stage restores the outputs instead of running it. The outputs are
byte-identical. A second part checks the everyday flow: A commits ``dvc.lock`` and pushes, B pulls
the outputs and ``dvc status`` is clean.
"""

import hashlib
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import make_pipeline_repo

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
STAGE = "heads@minilm-l6"


def _run(cmd, cwd, env):
    res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    assert res.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    return res.stdout + res.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3():
    pytest.importorskip("dvc_s3", reason="dvc-s3 not installed")
    moto_server = pytest.importorskip("moto.server", reason="moto[server] not installed")
    port = _free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    import boto3

    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    client = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")
    client.create_bucket(Bucket="attendome-test")
    yield f"http://127.0.0.1:{port}", env
    server.stop()


@pytest.fixture(scope="module")
def origin(tmp_path_factory, s3):
    endpoint, aws = s3
    d = tmp_path_factory.mktemp("origin")
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["models"] = ["minilm-l6"]
    raw["embed"]["transfer_model"] = None
    raw["heads"]["probe"].update(num_samples=4, seq_len=12, batch_size=4)
    make_pipeline_repo(d, raw)
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
               GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@example.com", GIT_COMMITTER_NAME="t",
               GIT_COMMITTER_EMAIL="t@example.com", **aws)
    dvc = [sys.executable, "-m", "dvc"]
    _run(["git", "init", "-q", "-b", "main"], d, env)
    _run(dvc + ["init", "-q"], d, env)
    _run(dvc + ["config", "core.analytics", "false"], d, env)
    _run(dvc + ["remote", "add", "-d", "team", "s3://attendome-test/dvcstore"], d, env)
    _run(dvc + ["remote", "modify", "team", "endpointurl", endpoint], d, env)
    _run(["git", "add", "-A"], d, env)
    _run(["git", "commit", "-qm", "init"], d, env)
    return d, env


def _clone(origin, name, tmp_path_factory):
    d, env = origin
    c = tmp_path_factory.mktemp(name) / "repo"
    _run(["git", "clone", "-q", str(d), str(c)], c.parent, env)
    return c, dict(env, PYTHONPATH=str(c))


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_run_cache_through_s3_skips_the_stage_on_another_machine(origin, tmp_path_factory):
    dvc = [sys.executable, "-m", "dvc"]
    a, env_a = _clone(origin, "machine-a", tmp_path_factory)
    out = _run(dvc + ["repro", STAGE], a, env_a)
    assert f"Running stage '{STAGE}'" in out
    _run(dvc + ["push", "--run-cache"], a, env_a)

    b, env_b = _clone(origin, "machine-b", tmp_path_factory)  # the same commit: no dvc.lock for the stage
    _run(dvc + ["fetch", "--run-cache"], b, env_b)  # run-cache entries and their objects; no checkout yet
    out = _run(dvc + ["repro", "--pull", STAGE], b, env_b)
    assert "Running stage" not in out and "is cached" in out, out
    for f in ("data/heads/minilm-l6.parquet", "data/heads/minilm-l6.json", "metrics/heads/minilm-l6.json"):
        assert _digest(a / f) == _digest(b / f), f


def test_push_and_pull_of_committed_outputs(origin, tmp_path_factory):
    dvc = [sys.executable, "-m", "dvc"]
    d, _ = origin
    a, env_a = _clone(origin, "machine-a2", tmp_path_factory)
    _run(dvc + ["repro", STAGE], a, env_a)
    _run(dvc + ["push"], a, env_a)
    _run(["git", "add", "dvc.lock", "metrics"], a, env_a)
    _run(["git", "commit", "-qm", "heads of minilm"], a, env_a)
    _run(["git", "push", "-q", "origin", "HEAD:results"], a, env_a)

    b, env_b = _clone(origin, "machine-b2", tmp_path_factory)
    _run(["git", "checkout", "-q", "results"], b, env_b)
    _run(dvc + ["pull", STAGE], b, env_b)
    assert _digest(a / "data/heads/minilm-l6.parquet") == _digest(b / "data/heads/minilm-l6.parquet")
    status = _run(dvc + ["status", STAGE], b, env_b)
    assert "up to date" in status.lower()
