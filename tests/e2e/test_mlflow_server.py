"""End-to-end tier: training runs reach a real MLflow server (started here) with loss curves."""

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from attendome.clone.data import SegmentData
from attendome.clone.model import train_cloner
from attendome.core.params import TrainParams
from attendome.core.tracking import track_run
from tests.unit.test_phase1 import synthetic_data

pytestmark = pytest.mark.e2e


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    d = tmp_path_factory.mktemp("mlflow")
    port = _free_port()
    mlflow_bin = Path(sys.executable).parent / "mlflow"
    proc = subprocess.Popen([str(mlflow_bin), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
                             "--backend-store-uri", f"sqlite:///{d / 'mlflow.db'}",
                             "--artifacts-destination", str(d / "artifacts")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=d)
    url = f"http://127.0.0.1:{port}"
    import urllib.request

    for _ in range(120):
        try:
            urllib.request.urlopen(f"{url}/health", timeout=1)
            break
        except OSError:
            if proc.poll() is not None:
                pytest.fail("mlflow server exited")
            time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail("mlflow server did not start within 60 s")
    yield url
    proc.terminate()
    proc.wait(timeout=20)


def test_clone_run_appears_with_loss_curves_and_tags(server, monkeypatch, tmp_path):
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_TRACKING_URI", server)
    monkeypatch.setenv("DVC_STAGE", "clone@synthetic")
    monkeypatch.setenv("DVC_EXP_NAME", "exp-test")
    data = synthetic_data(40, 2)
    train = SegmentData(data.prompt_ids[:25], data.Z[:25], data.A[:25], True)
    val = SegmentData(data.prompt_ids[25:], data.Z[25:], data.A[25:], True)
    tp = TrainParams(rank=4, epochs=5, position_dims=0, patience=5)
    art = tmp_path / "weights.txt"
    art.write_text("weights")
    with track_run("attendome-clone-test", tags={"model": "synthetic"}) as tr:
        assert tr.active
        tr.log_params(tp.model_dump())
        train_cloner(train, val, tp, 2, seed=0, tracker=tr, progress=False)
        tr.log_artifact(art)
    client = MlflowClient(server)
    exp = client.get_experiment_by_name("attendome-clone-test")
    assert exp.tags.get("mlflow.experimentKind") == "custom_model_development"  # UI opens on runs/charts
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 1
    run = runs[0]
    assert run.info.run_name == "exp-test/clone@synthetic" and run.info.status == "FINISHED"
    assert run.data.tags["dvc_stage"] == "clone@synthetic" and run.data.tags["model"] == "synthetic"
    for curve in ("train_kl", "val_kl", "lr", "grad_norm"):
        assert len(client.get_metric_history(run.info.run_id, curve)) == 5
    assert [a.path for a in client.list_artifacts(run.info.run_id)] == ["weights.txt"]


def test_sigterm_marks_the_run_killed(server, tmp_path):
    from mlflow.tracking import MlflowClient

    script = tmp_path / "victim.py"
    script.write_text(
        "import os, signal, time\n"
        "from attendome.core.tracking import track_run\n"
        "with track_run('attendome-sigterm-test') as tr:\n"
        "    assert tr.active\n"
        "    print('ready', flush=True)\n"
        "    time.sleep(60)\n")
    env = dict(os.environ, MLFLOW_TRACKING_URI=server, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, env=env, text=True)
    assert proc.stdout.readline().strip() == "ready"
    proc.send_signal(15)
    assert proc.wait(timeout=30) == 143
    client = MlflowClient(server)
    exp = client.get_experiment_by_name("attendome-sigterm-test")
    (run,) = client.search_runs([exp.experiment_id])
    assert run.info.status == "KILLED"


def test_unreachable_server_is_detected_in_seconds(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # nothing listens there
    t0 = time.perf_counter()
    with pytest.warns(UserWarning, match="unreachable"):
        with track_run("x") as tr:
            tr.log_metrics({"a": 1.0})
    assert not tr.active
    assert time.perf_counter() - t0 < 10


def test_telemetry_is_off_by_default(monkeypatch, tmp_path):
    monkeypatch.delenv("MLFLOW_DISABLE_TELEMETRY", raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'm.db'}")
    with track_run("attendome-telemetry-test") as tr:
        assert tr.active
    assert os.environ["MLFLOW_DISABLE_TELEMETRY"] == "true"
