"""End-to-end tier: training runs reach a real MLflow server (started here) with loss curves."""

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from attendome.clone.cloner import SegmentData, train_cloner
from attendome.core.params import TrainParams
from attendome.core.tracking import track_run
from tests.test_phase1_unit import synthetic_data

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
    train = SegmentData(data.prompt_ids[:30], data.Z[:30], data.A[:30], True)
    held = SegmentData(data.prompt_ids[30:], data.Z[30:], data.A[30:], True)
    tp = TrainParams(rank=4, epochs=5, position_dims=0)
    art = tmp_path / "weights.txt"
    art.write_text("weights")
    with track_run("attendome-clone-test", tags={"model": "synthetic"}) as tr:
        assert tr.active
        tr.log_params(tp.model_dump())
        train_cloner(train, held, tp, 2, tracker=tr, progress=False)
        tr.log_artifact(art)
    client = MlflowClient(server)
    exp = client.get_experiment_by_name("attendome-clone-test")
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 1
    run = runs[0]
    assert run.info.run_name == "exp-test/clone@synthetic"
    assert run.data.tags["dvc_stage"] == "clone@synthetic" and run.data.tags["model"] == "synthetic"
    assert len(client.get_metric_history(run.info.run_id, "heldout_kl")) == 5
    assert len(client.get_metric_history(run.info.run_id, "train_kl")) == 5
    assert [a.path for a in client.list_artifacts(run.info.run_id)] == ["weights.txt"]


def test_tracking_failure_never_breaks_a_stage(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    with pytest.warns(UserWarning, match="tracking"):
        with track_run("x") as tr:
            tr.log_metrics({"a": 1.0})
    assert not tr.active
