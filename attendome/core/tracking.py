"""The one MLflow helper: tracking URI, run tags, and never losing DVC outputs to a tracking error.

Tracking URI: ``$MLFLOW_TRACKING_URI`` when set, else ``sqlite:///<root>/mlflow.db`` with artifacts
in ``<root>/mlruns``, where ``<root>`` is ``$DVC_ROOT`` (set by DVC for every stage, so
``dvc exp run --temp`` runs land in the real repository) or the current directory. Every run is
tagged with the git commit, the DVC stage (``$DVC_STAGE``) and experiment name (``$DVC_EXP_NAME``),
and named after the stage/experiment.
"""

from __future__ import annotations

import os
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
        mlflow.set_tracking_uri(tracking_uri())
        if mlflow.get_experiment_by_name(experiment) is None and not os.environ.get("MLFLOW_TRACKING_URI"):
            mlflow.create_experiment(experiment, artifact_location=(root / "mlruns").as_uri())
        mlflow.set_experiment(experiment)
        run = mlflow.start_run(run_name=name, tags=all_tags)
    except Exception as err:
        warnings.warn(f"MLflow tracking unavailable ({err}); continuing without tracking")
        yield Tracker(mlflow, False)
        return
    tracker = Tracker(mlflow, True)
    status = "FAILED"
    try:
        yield tracker
        status = "FINISHED"
    finally:
        try:
            mlflow.end_run(status=status)
        except Exception:
            pass
        del run
