"""Unit tier: every stage's code deps in ``dvc.yaml`` are exactly the code it imports
(:mod:`tests.stagedeps`), so that changing one step's code reruns only the stages that run it."""

import pytest
import yaml

from tests import stagedeps as sd

STAGES = sorted(sd.stage_scripts())


@pytest.mark.parametrize("stage", STAGES)
def test_a_stage_depends_on_exactly_the_code_it_imports(stage):
    declared, expected = sd.declared_code(stage), sd.expected_code(stage)
    assert not expected - declared, (f"{stage} runs code its deps do not name: {sorted(expected - declared)}; "
                                     f"`python -m tests.stagedeps` prints the right list")
    assert not declared - expected, f"{stage} depends on code it never imports: {sorted(declared - expected)}"


def _dependents(path: str) -> set[str]:
    return {s for s in STAGES if path in sd.declared_code(s)}


def test_the_predictor_reruns_only_phase1_and_later():
    # the check: a comment in the cloner's model must not rerun a forward pass of any model
    assert _dependents("attendome/clone/model.py") <= {"clone", "embed", "baselines", "leaderboard", "explore"}
    for stage in ("corpus", "features", "attention", "heads", "atlas"):
        assert not any(f.startswith("attendome/clone/") for f in sd.declared_code(stage)), stage


def test_labels_plots_and_the_leaderboard_do_not_rerun_forward_passes():
    assert _dependents("attendome/atlas/summary.py") == {"atlas"}
    forward = {"heads", "attention", "features", "corpus"}
    for f in ("attendome/board/run.py", "attendome/board/metrics.py", "attendome/board/plots.py",
              "attendome/space/universal.py", "attendome/clone/training.py"):
        assert not _dependents(f) & forward, f


def test_the_checker_finds_a_function_level_import(tmp_path):
    # imports inside functions count (they run when the stage calls the function)
    (tmp_path / "attendome" / "core").mkdir(parents=True)
    (tmp_path / "attendome" / "__init__.py").write_text("")
    (tmp_path / "attendome" / "core" / "__init__.py").write_text("")
    (tmp_path / "attendome" / "core" / "a.py").write_text("def f():\n    from attendome.core import b\n")
    (tmp_path / "attendome" / "core" / "b.py").write_text("X = 1\n")
    script = tmp_path / "s.py"
    script.write_text("from attendome.core.a import f\n")
    assert sd.closure(script, tmp_path) == {"attendome/__init__.py", "attendome/core/__init__.py",
                                            "attendome/core/a.py", "attendome/core/b.py"}


def test_every_stage_that_computes_with_floats_pins_the_cpu_code_paths():
    # the same bytes on every x86-64 machine with AVX2 (attendome.REPRODUCIBLE_CPU): the variables come
    # before `python` in the command, so they are set before torch and numpy load their libraries
    from attendome import REPRODUCIBLE_CPU

    prefix = " ".join(f"{k}={v}" for k, v in REPRODUCIBLE_CPU.items()) + " python "
    stages = yaml.safe_load((sd.ROOT / "dvc.yaml").read_text())["stages"]
    no_floats = {"corpus", "atlas", "report"}  # tokenising, labelling by thresholds, markdown
    for name, st in stages.items():
        cmd = (st.get("do") or st)["cmd"]
        if name in no_floats:
            assert cmd.startswith("python"), name
        else:
            assert cmd.startswith(prefix), f"{name}: {cmd}"
