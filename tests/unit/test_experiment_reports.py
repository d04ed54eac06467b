"""The experiment scripts choose on validation, never on held-out numbers (their report code, on
hand-built result tables)."""

import importlib.util
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"exp_{name}", ROOT / "experiments" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_schedule_report_chooses_the_lowest_validation_kl_not_the_best_held_out(tmp_path):
    sched = _load("schedule")
    rows = []
    # setting A: better on validation, worse held out; B the other way round
    for name, e, val, ho in (("30 epochs, lr 0.01", 30, 0.30, 0.40), ("60 epochs, lr 0.01", 60, 0.31, 0.20)):
        for m in ("a", "b"):
            rows.append(dict(setting=name, epochs=e, lr=0.01, model=m, control=False, best_val_kl=val,
                             best_epoch=e - 1, epochs_run=e, seconds=1.0, heldout_kl=ho, ratio_positional=ho,
                             ind_mass=0.5, ind_mass_true=0.8))
    curves = pd.DataFrame([dict(setting=r["setting"], epochs=r["epochs"], lr=0.01, epoch=i,
                                val_kl=r["best_val_kl"] + 0.1 / (i + 1),
                                train_kl=0.2, lr_now=0.01) for r in rows[::2] for i in range(3)])
    sched._write_report(tmp_path, pd.DataFrame(rows), curves)
    md = (tmp_path / "schedule.md").read_text()
    chosen = [line for line in md.splitlines() if line.startswith("| ") and "(chosen on validation)" in line]
    assert len(chosen) == 1 and chosen[0].startswith("| 30 epochs, lr 0.01")
    assert (tmp_path / "schedule.png").stat().st_size > 0


@pytest.mark.parametrize("text,ok", [("60:0.01", True), ("60", False), ("0:0.01", False), ("30:-1", False)])
def test_schedule_settings_are_checked(text, ok):
    import argparse

    sched = _load("schedule")
    if ok:
        assert sched._setting(text) == (60, 0.01)
    else:
        with pytest.raises(argparse.ArgumentTypeError):
            sched._setting(text)
