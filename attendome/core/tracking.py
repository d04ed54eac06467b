"""The one MLflow helper: tracking URI, run tags, and never losing DVC outputs to a tracking error.

Tracking URI: ``$MLFLOW_TRACKING_URI`` when set, else ``sqlite:///<root>/mlflow.db`` with artifacts
in ``<root>/mlruns``, where ``<root>`` is ``$DVC_ROOT`` (set by DVC for every stage, so
``dvc exp run --temp`` runs land in the real repository) or the current directory. Every run is
tagged with the git commit, the DVC stage (``$DVC_STAGE``) and experiment name (``$DVC_EXP_NAME``),
and named after the stage/experiment.

No network unless asked: MLflow's usage telemetry is switched off (``MLFLOW_DISABLE_TELEMETRY=true``
unless the user set it), and an ``http(s)`` tracking URI gets one quick connection probe (2 s); an
unreachable server means one warning and an untracked stage (DVC outputs are written either way),
not minutes of retries. Experiments are created as model-training experiments, so the UI opens on
runs and charts. A run ends FINISHED, FAILED on an exception, or KILLED on Ctrl-C / SIGTERM.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

__all__ = ["tracking_root", "tracking_uri", "Tracker", "track_run"]


def tracking_root() -> Path:
    return Path(os.environ.get("DVC_ROOT") or os.getcwd()).resolve()


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{tracking_root() / 'mlflow.db'}"


def server_reachable(uri: str, timeout: float = 2.0) -> bool:
    """For an ``http(s)`` URI, whether its host accepts a TCP connection within ``timeout`` seconds
    (other URIs, e.g. sqlite files, are local and count as reachable)."""
    from urllib.parse import urlparse

    u = urlparse(uri)
    if u.scheme not in ("http", "https"):
        return True
    try:
        with socket.create_connection((u.hostname or "localhost", u.port or (443 if u.scheme == "https" else 80)),
                                      timeout=timeout):
            return True
    except OSError:
        return False


class _Terminated(SystemExit):
    """Raised inside a tracked run when the process gets SIGTERM: the run ends KILLED and the process
    exits with status 143 (128 + SIGTERM), as it would have without the handler."""


def _git_commit(root: Path) -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                              timeout=10).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


class Tracker:
    """Thin wrapper over an active MLflow run; every call is a no-op after a tracking failure."""

    def __init__(self, mlflow_mod, active: bool):
        self._mlflow = mlflow_mod
        self.active = active

    def _call(self, fn: str, *args, **kwargs) -> None:
        if not self.active:
            return
        try:
            getattr(self._mlflow, fn)(*args, **kwargs)
        except Exception as err:  # tracking must never break the stage
            warnings.warn(f"MLflow {fn} failed ({err}); continuing without tracking")
            self.active = False

    def log_params(self, params: dict[str, Any]) -> None:
        self._call("log_params", {k: str(v)[:500] for k, v in params.items()})

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        clean = {k.replace("@", "_at_"): float(v) for k, v in metrics.items() if v is not None and v == v}
        self._call("log_metrics", clean, step=step)

    def log_artifact(self, path: str | Path) -> None:
        self._call("log_artifact", str(path))


@contextmanager
def track_run(experiment: str, run_name: str | None = None, tags: dict[str, str] | None = None) -> Iterator[Tracker]:
    """Start an MLflow run (see module docstring); yields a :class:`Tracker`.

    If MLflow cannot start (bad URI, locked store), a warning is printed and a disabled tracker is
    yielded, so the stage still writes its DVC outputs.
    """
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # no usage pings unless the user asks
    uri = tracking_uri()
    if not server_reachable(uri):
        warnings.warn(f"MLflow tracking server {uri} is unreachable; this stage runs untracked (its DVC outputs "
                      "are written as usual)")
        yield Tracker(None, False)
        return
    try:
        import mlflow
    except ImportError:
        warnings.warn("mlflow is not installed; training runs are not tracked")
        yield Tracker(None, False)
        return
    root = tracking_root()
    stage = os.environ.get("DVC_STAGE", "")
    exp_name = os.environ.get("DVC_EXP_NAME", "")
    name = run_name or "/".join(x for x in (exp_name, stage) if x) or experiment
    all_tags = {"git_commit": _git_commit(root), "dvc_stage": stage, "dvc_exp_name": exp_name, **(tags or {})}
    try:
        mlflow.set_tracking_uri(uri)
        if mlflow.get_experiment_by_name(experiment) is None:
            loc = None if os.environ.get("MLFLOW_TRACKING_URI") else (root / "mlruns").as_uri()
            mlflow.create_experiment(experiment, artifact_location=loc,
                                     tags={"mlflow.experimentKind": "custom_model_development"})
        mlflow.set_experiment(experiment)
        run = mlflow.start_run(run_name=name, tags=all_tags)
    except Exception as err:
        warnings.warn(f"MLflow tracking unavailable ({err}); continuing without tracking")
        yield Tracker(mlflow, False)
        return

    def on_term(signum, frame):
        raise _Terminated(128 + signum)

    previous = signal.signal(signal.SIGTERM, on_term) if _main_thread() else None
    tracker = Tracker(mlflow, True)
    status = "FAILED"
    try:
        yield tracker
        status = "FINISHED"
    except (KeyboardInterrupt, _Terminated):
        status = "KILLED"
        raise
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        try:
            mlflow.end_run(status=status)
        except Exception:
            pass
        del run


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()
