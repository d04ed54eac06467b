"""End-to-end tier: `dvc repro` in a temporary git repo on tiny params; a second repro does nothing."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.conftest import make_pipeline_repo

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
TINY_MODELS = ["smollm2-135m", "minilm-l6"]


def _run(cmd, cwd, env):
    res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    assert res.returncode == 0, f"{' '.join(cmd)} failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    return res.stdout + res.stderr


def tiny_params() -> dict:
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["models"] = list(TINY_MODELS)
    raw["heads"]["probe"].update(num_samples=4, seq_len=12, batch_size=4)
    raw["heads"]["retrieval"].update(context_lengths=[64], depths=[0.5], needles_per_cell=1, max_new_tokens=4)
    raw["corpus"].update(prompt_words=12, max_prompts_per_doc=1, n_generated=8)
    raw["clone"].update(epochs=2, n_seeds=2)
    raw["embed"].update(epochs=2, n_seeds=1, transfer_model="minilm-l6")
    raw["leaderboard"].update(min_positives=1, min_models=1, n_boot=50, n_permutations=20,
                              n_permutations_classifier=2)
    return raw


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    d = tmp_path_factory.mktemp("e2e")
    make_pipeline_repo(d, tiny_params())
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
               PYTHONPATH=f"{d}{os.pathsep}{ROOT / 'tests/socket_guard'}", GIT_AUTHOR_NAME="t",
               GIT_AUTHOR_EMAIL="t@example.com", GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@example.com",
               ATTENDOME_SOCKET_LOG=str(d / "sockets.log"))
    for var in ("MLFLOW_TRACKING_URI", "MLFLOW_DISABLE_TELEMETRY", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        env.pop(var, None)  # the defaults a user gets: no offline switches, no tracking server
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
        assert json.loads((d / f"data/heads/{key}.json").read_text())["counts"]
        assert "previous_token" in json.loads((d / f"metrics/heads/{key}.json").read_text())
    atlas = pd.read_parquet(d / "data/atlas.parquet")
    assert set(atlas["model"]) == set(TINY_MODELS)
    assert set(atlas["label"]) <= {"high", "medium", "low", "n/a"}
    m = json.loads((d / "data/atlas_summary.json").read_text())
    assert set(m["models"]) == set(TINY_MODELS)
    pngs = sorted(p.name for p in (d / "plots/atlas").glob("*.png"))
    n_types = len(tiny_params()["heads"]["scorers"])
    assert "smollm2-135m__induction.png" in pngs and len(pngs) == 2 * n_types


def test_phase1_and_phase2_outputs(repo):
    d, _, first = repo
    manifest = json.loads((d / "data/corpus/manifest.json").read_text())
    assert manifest["train"]["prompts"] > 0 and manifest["val"]["prompts"] > 0 and manifest["heldout"]["prompts"] > 0
    seeds = set()
    for key in TINY_MODELS:
        c = json.loads((d / f"metrics/clone/{key}.json").read_text())
        assert {"heldout_kl", "heldout_kl_sd", "positional_kl", "ratio_to_positional"} == set(c) - {"beats_positional"}
        details = json.loads((d / f"data/clone/{key}.json").read_text())
        assert len(details["history"]) == 2 and details["headline"]["n_seeds"] == 2
        from safetensors import safe_open

        with safe_open(str(d / f"models/cloners/{key}.safetensors"), "pt") as f:
            info = json.loads(f.metadata()["info"])
            assert {"s0.Q", "s1.Q", "feature_proj"} <= set(f.keys())
        seeds |= set(info["init_seeds"])
    assert len(seeds) == 2 * len(TINY_MODELS)  # no two models (or replicates) start from the same weights
    board = json.loads((d / "metrics/leaderboard.json").read_text())
    assert set(board["methods"]) == {"universal", "random", "scores", "rsa", "cloner", "depth", "depth_stats"}
    # paired differences exist for the types queried across both models (here previous/duplicate token:
    # the encoder has no induction heads), each against every other method
    assert board["differences"] and all(
        set(v) >= {"universal-rsa", "universal-depth_stats", "universal-cloner"} for v in board["differences"].values())
    assert set(board["reconstruction"]) == set(TINY_MODELS)
    q = pd.read_parquet(d / "data/leaderboard/queries.parquet")
    assert {"method", "head_type", "seed", "scope", "ap", "ap_chance"} <= set(q.columns)
    corr = pd.read_parquet(d / "data/correspondence.parquet")
    assert {"method", "model", "other_model", "similarity", "mutual"} <= set(corr.columns)
    emb = pd.read_parquet(d / "data/embeddings/universal.parquet")
    assert len(emb) == 30 * 9 + 6 * 12 and "e_31" in emb.columns and set(emb.seed) == {0}
    assert board["transfer"]["model"] == "minilm-l6" and board["transfer"]["budget_updates_per_head"] > 0
    assert set(json.loads((d / "metrics/embed.json").read_text())["heldout_kl"]) == set(TINY_MODELS)
    assert (d / "mlflow.db").exists()
    for png in ("map_by_type.png", "retrieval_at_k.png", "reconstruction.png", "outliers.png", "embeddings_pca.png"):
        assert (d / "plots/leaderboard" / png).stat().st_size > 0
    assert (d / "plots/embed/training.png").stat().st_size > 0


def test_a_second_directory_reproduces_every_output_byte_for_byte(repo, tmp_path_factory):
    # the same commit and params in another directory, run with another default thread count: dvc.lock
    # (the md5 of every output, folder outputs included) and every committed metric are identical
    d, env, _ = repo
    lock = (d / "dvc.lock").read_text()
    metrics = {p.relative_to(d).as_posix(): p.read_bytes() for p in (d / "metrics").rglob("*.json")}
    d2 = tmp_path_factory.mktemp("e2e_again")
    make_pipeline_repo(d2, tiny_params())
    env2 = dict(env, PYTHONPATH=f"{d2}{os.pathsep}{ROOT / 'tests/socket_guard'}", OMP_NUM_THREADS="1",
                ATTENDOME_SOCKET_LOG=str(d2 / "sockets.log"))
    for cmd in (["git", "init", "-q"], [sys.executable, "-m", "dvc", "init", "-q"],
                [sys.executable, "-m", "dvc", "config", "core.analytics", "false"]):
        _run(cmd, d2, env2)
    _run([sys.executable, "-m", "dvc", "repro"], d2, env2)
    assert (d2 / "dvc.lock").read_text() == lock, "another directory wrote other outputs (see the md5s in dvc.lock)"
    assert {p.relative_to(d2).as_posix(): p.read_bytes() for p in (d2 / "metrics").rglob("*.json")} == metrics


def test_explorer_site_and_figures(repo):
    d, _, first = repo
    site = d / "reports/explorer"
    assert "Running stage 'explore'" in first
    for f in ("index.html", "app.js", "app.css", "data.js", "dvc-plots-template.html"):
        assert (site / f).stat().st_size > 0, f
    assert sorted(p.name for p in (site / "attn").iterdir()) == sorted(f"{k}.js" for k in TINY_MODELS)
    figs = {p.name for p in (site / "figures").iterdir()}
    for stem in ("map_universal", "map_rsa", "map_scores", "map_cloner", "depth_share", "predictor_curves",
                 "correspondence"):
        assert {f"{stem}.png", f"{stem}.svg"} <= figs, stem
    assert not list(d.glob("reports/.explorer.*")), "a temporary site folder was left behind"
    data = json.loads((site / "data.js").read_text().split("=", 1)[1].strip().rstrip(";"))
    assert len(data["heads"]) == 30 * 9 + 6 * 12
    # nothing in the site points at the network (scripts, styles, images, fonts)
    for f in site.rglob("*"):
        if f.suffix in (".html", ".js", ".css"):
            text = f.read_text()
            assert "src=\"http" not in text and "href=\"http" not in text and "@import" not in text, f


def test_reloaded_predictors_give_the_recorded_heldout_kl(repo):
    # the explorer's cards show what the saved cloners and encoder predict: reloaded from their files,
    # they must reproduce the held-out KL their stages recorded
    d, _, _ = repo
    from attendome.clone.evaluate import evaluate_heads
    from attendome.clone.run import load_split_data
    from attendome.core.params import load_params
    from attendome.explore.predict import load_cloner, load_universal

    params = load_params(d / "params.yaml")
    key = TINY_MODELS[0]
    sd = load_split_data(key, params, str(d), params.clone)
    n = sd.heldout.A[0].shape[0]
    cloner = load_cloner(str(d / f"models/cloners/{key}.safetensors"), sd.train, params.clone, replicate=1)
    kl = evaluate_heads(cloner, sd.heldout, n, 16, methods=("model",)).query("kind == 'all' and metric == 'kl'")
    rec = pd.read_parquet(d / f"data/clone/{key}.parquet").query(
        "seed == 1 and method == 'model' and kind == 'all' and metric == 'kl'")
    assert kl.value.mean() == pytest.approx(rec.value.mean(), rel=1e-4)
    trains = {k: load_split_data(k, params, str(d), params.embed).train for k in params.models}
    enc = load_universal(str(d / "models/universal.safetensors"), trains, params.embed)
    sdu = load_split_data(key, params, str(d), params.embed)
    kl = evaluate_heads(lambda b: enc(key, b), sdu.heldout, n, 16, methods=("model",)).query(
        "kind == 'all' and metric == 'kl'")
    rec = pd.read_parquet(d / "data/embed/errors.parquet").query(
        "model == @key and seed == 0 and method == 'model' and kind == 'all' and metric == 'kl'")
    assert kl.value.mean() == pytest.approx(rec.value.mean(), rel=1e-4)


def test_explorer_in_a_browser_offline(repo, tmp_path):
    # as a person uses it: open from disk in headless Chromium with the network blocked; the map shows
    # every head; a click opens a card with nearest heads; a link opens another model's head
    from tests.e2e.browser import chromium_path, drive_explorer

    if chromium_path() is None or importlib.util.find_spec("playwright") is None:
        if os.environ.get("CI"):
            pytest.fail("CI must install Chromium and Playwright (.ci/run) for the explorer's browser test")
        pytest.skip("no system Chromium (apt-get install chromium) or no playwright; CI runs this test")
    d, _, _ = repo
    shots = Path(os.environ.get("ATTENDOME_SCREENSHOTS", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    seen = drive_explorer(d / "reports/explorer", shots)
    assert seen["outside"] == [], f"the page asked for files outside its folder: {seen['outside'][:5]}"
    assert seen["errors"] == [], seen["errors"]
    assert seen["n_points"] == seen["n_heads"] == 30 * 9 + 6 * 12
    assert seen["count_text"] == f"showing {seen['n_heads']} of {seen['n_heads']} heads"
    assert seen["card"] and seen["nearest"], "the card shows the head's nearest heads"
    assert seen["followed"] == seen["linked"] and seen["followed"].split("/")[0] != seen["card"].split("/")[0]
    assert seen["n_tables"] >= 2
    assert all(p.stat().st_size > 10_000 for p in seen["screenshots"])


def test_dvc_plots_show_offline_with_the_template(repo):
    d, env, _ = repo
    _run([sys.executable, "-m", "dvc", "plots", "show", "--html-template", "reports/explorer/dvc-plots-template.html",
          "-o", "plots_offline"], d, env)
    html = (d / "plots_offline/index.html").read_text()
    assert "cdn.jsdelivr" not in html and "<script src=" not in html
    assert "vegaEmbed(" in html and ".vega={}" in html  # DVC's plot calls, and Vega itself inlined


def _clone_outputs(d: Path, key: str) -> dict[str, str]:
    import hashlib

    files = [f"models/cloners/{key}.safetensors", f"data/clone/{key}.parquet", f"data/clone/{key}.json",
             f"metrics/clone/{key}.json", f"plots/clone/{key}.png"]
    return {f: hashlib.sha256((d / f).read_bytes()).hexdigest() for f in files}


def _latest_run(d: Path, experiment: str) -> tuple[str, int] | None:
    import sqlite3

    con = sqlite3.connect(d / "mlflow.db")
    try:
        row = con.execute("SELECT r.status, r.start_time FROM runs r JOIN experiments e ON r.experiment_id = "
                          "e.experiment_id WHERE e.name = ? ORDER BY r.start_time DESC LIMIT 1", (experiment,)
                          ).fetchone()
    finally:
        con.close()
    return row


@pytest.mark.parametrize("signal_name", ["SIGTERM", "SIGKILL"])
def test_a_training_stage_killed_midway_keeps_its_outputs_and_reruns_identically(repo, tmp_path, signal_name):
    import signal
    import time

    from attendome import REPRODUCIBLE_CPU

    d, env, _ = repo
    key = TINY_MODELS[0]
    before = _clone_outputs(d, key)
    long = yaml.safe_load((d / "params.yaml").read_text())
    long["clone"].update(epochs=500, patience=500)  # long enough to be caught while training
    (tmp_path / "long.yaml").write_text(yaml.safe_dump(long, sort_keys=False))
    started = (_latest_run(d, "attendome-clone") or ("", 0))[1]
    proc = subprocess.Popen([sys.executable, "stages/clone.py", key, "--params", str(tmp_path / "long.yaml")], cwd=d,
                            env=dict(env, **REPRODUCIBLE_CPU), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        run = _latest_run(d, "attendome-clone")
        if run and run[1] > started and run[0] == "RUNNING":
            break
        time.sleep(0.5)
    time.sleep(2.0)  # well inside training
    assert proc.poll() is None, "the stage ended before it could be interrupted"
    proc.send_signal(getattr(signal, signal_name))
    code = proc.wait(timeout=120)
    assert code == (143 if signal_name == "SIGTERM" else -9), proc.stderr.read()[-2000:]
    status = _latest_run(d, "attendome-clone")[0]
    # SIGTERM: the run is closed as KILLED; SIGKILL cannot be caught, the run stays RUNNING in MLflow
    assert status == ("KILLED" if signal_name == "SIGTERM" else "RUNNING")
    # nothing was half-written: the previous outputs are intact and no temporary file is left
    assert _clone_outputs(d, key) == before
    for folder in ("models", "data", "metrics", "plots"):
        assert not [p for p in (d / folder).rglob(".*.tmp")], folder
    status = _run([sys.executable, "-m", "dvc", "status", f"clone@{key}"], d, env)
    assert "up to date" in status.lower()
    # a rerun of the stage (its own params) writes the very bytes of the uninterrupted run
    _run([sys.executable, "-m", "dvc", "repro", "-f", "-s", f"clone@{key}"], d, env)
    assert _clone_outputs(d, key) == before


def test_a_corrupted_object_in_dvcs_cache_is_never_checked_out_and_repro_rebuilds_it(repo):
    # bytes changed under .dvc/cache: DVC verifies its objects, so `dvc status` reports the output as not
    # in cache, `dvc checkout` refuses to restore it, and `dvc repro` reruns the stage that makes it
    # (only that one: the rebuilt bytes are the same, so nothing downstream reruns) (README: Sharing results)
    d, env, _ = repo
    out = "data/atlas_summary.json"
    lock = yaml.safe_load((d / "dvc.lock").read_text())
    md5 = next(o["md5"] for o in lock["stages"]["atlas"]["outs"] if o["path"] == out)
    obj = d / ".dvc/cache/files/md5" / md5[:2] / md5[2:]
    good = (d / out).read_bytes()
    obj.chmod(0o644)
    obj.write_bytes(good.replace(b"{", b"[", 1))
    assert "not in cache" in _run([sys.executable, "-m", "dvc", "status", "atlas"], d, env)
    (d / out).unlink()
    res = subprocess.run([sys.executable, "-m", "dvc", "checkout", out], cwd=d, env=env, capture_output=True, text=True)
    assert res.returncode != 0 and not (d / out).exists()
    rerun = _run([sys.executable, "-m", "dvc", "repro"], d, env)
    assert "Running stage 'atlas'" in rerun and "Running stage 'clone@" not in rerun
    assert (d / out).read_bytes() == good and obj.read_bytes() == good
    assert "up to date" in _run([sys.executable, "-m", "dvc", "status"], d, env).lower()


def test_no_network_connection_during_repro(repo):
    d, _, _ = repo
    log = d / "sockets.log"
    attempts = log.read_text().splitlines() if log.exists() else []
    assert attempts == [], "network connections attempted during dvc repro:\n" + "\n".join(attempts[:20])


def test_second_repro_does_nothing(repo):
    d, env, _ = repo
    out = _run([sys.executable, "-m", "dvc", "repro"], d, env)
    assert "Running stage" not in out
    status = _run([sys.executable, "-m", "dvc", "status"], d, env)
    assert "up to date" in status.lower()


def test_metrics_show_reads_the_metrics(repo):
    d, env, _ = repo
    out = _run([sys.executable, "-m", "dvc", "metrics", "show", "--json"], d, env)
    assert "metrics/heads/smollm2-135m.json" in out and "metrics/leaderboard/universal.json" in out
    assert '"metrics/leaderboard.json"' not in out  # the wide file is an output, not a metric


def test_exp_run_with_a_changed_param_and_exp_show(repo):
    d, env, _ = repo
    _run(["git", "add", "-A"], d, env)
    _run(["git", "commit", "-qm", "baseline run"], d, env)
    base = yaml.safe_load((d / "params.yaml").read_text())["embed"]["dim"]  # the committed run's
    _run([sys.executable, "-m", "dvc", "exp", "run", "-S", "embed.dim=8"], d, env)
    res = subprocess.run([sys.executable, "-m", "dvc", "exp", "show", "--json"], cwd=d, env=env,
                         capture_output=True, text=True, check=True)
    assert base != 8 and {8, base} <= set(_dims(json.loads(res.stdout)))


def test_queued_sweep_runs_in_parallel_and_tracks_each_experiment(repo):
    import sqlite3
    import time

    d, env, _ = repo
    dvc = [sys.executable, "-m", "dvc"]
    names = []
    for dim in (4, 6):
        out = _run(dvc + ["exp", "run", "--queue", "-S", f"embed.dim={dim}"], d, env)
        names.append(out.split("'")[1] if "'" in out else None)
    # the workers outlive `dvc queue start` and inherit its output: send it to a file, not to a pipe
    with open(d / "queue-start.log", "w") as log:
        subprocess.run(dvc + ["queue", "start", "--jobs", "2"], cwd=d, env=env, stdout=log, stderr=log, check=True)
    deadline = time.time() + 900
    while time.time() < deadline:
        status = _run(dvc + ["queue", "status"], d, env)
        if "Queued" not in status and "Running" not in status:
            break
        time.sleep(5)
    subprocess.run(dvc + ["queue", "stop"], cwd=d, env=env, capture_output=True)
    assert "Failed" not in status, status
    res = subprocess.run(dvc + ["exp", "show", "--json"], cwd=d, env=env, capture_output=True, text=True, check=True)
    assert {4, 6} <= set(_dims(json.loads(res.stdout)))
    with sqlite3.connect(d / "mlflow.db") as db:  # queued runs track into the repository's store
        exp_names = {r[0] for r in db.execute("select value from tags where key = 'dvc_exp_name'")}
    assert sum(1 for n in exp_names if n) >= 2, exp_names


def _dims(node):
    if isinstance(node, dict):
        if isinstance(node.get("embed"), dict) and "dim" in node["embed"]:
            yield node["embed"]["dim"]
        for v in node.values():
            yield from _dims(v)
    elif isinstance(node, list):
        for v in node:
            yield from _dims(v)
