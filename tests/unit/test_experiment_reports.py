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


def _segment_data(n_prose: int, n_repeat: int):
    import torch

    from attendome.clone.data import SegmentData

    ids = [f"p{i}" for i in range(n_prose)] + [f"r{i}" for i in range(n_repeat)]
    Z = [torch.full((3, 2), float(i)) for i in range(len(ids))]  # (S, d_in): the prompt's index
    A = [torch.full((1, 3, 4), 0.25) for _ in ids]  # (n_heads, S, S + 1)
    return SegmentData(ids, Z, A, True, kinds=["prose"] * n_prose + ["repeat"] * n_repeat)


def test_split_prompts_cuts_disjoint_parts_that_keep_each_kind_share_and_cover_everything():
    common = _load("_common")
    data = _segment_data(30, 9)
    parts = common.split_prompts(data, 3, seed=0)
    ids = [p.prompt_ids for p in parts]
    assert sorted(sum(ids, [])) == sorted(data.prompt_ids)  # every prompt in exactly one part
    assert all(len(set(a) & set(b)) == 0 for i, a in enumerate(ids) for b in ids[i + 1:])
    assert [sum(k == "repeat" for k in p.kinds) for p in parts] == [3, 3, 3]
    assert [sum(k == "prose" for k in p.kinds) for p in parts] == [10, 10, 10]
    for p in parts:  # features, targets and kinds travel with their prompt
        assert all(int(z[0, 0]) == data.prompt_ids.index(pid) for pid, z in zip(p.prompt_ids, p.Z))
        assert all(k == ("repeat" if pid.startswith("r") else "prose") for pid, k in zip(p.prompt_ids, p.kinds))
    assert [p.prompt_ids for p in common.split_prompts(data, 3, seed=0)] == ids  # seeded
    assert [p.prompt_ids for p in common.split_prompts(data, 3, seed=1)] != ids
    with pytest.raises(ValueError):
        common.split_prompts(data, 40)


def test_stimuli_regimes_give_every_model_the_same_or_a_different_part():
    from attendome.space.universal import ModelData

    stim = _load("stimuli")
    d = _segment_data(30, 9)
    models = [ModelData(k, d, d, d, 1, 1) for k in ("a", "b", "c")]
    same = stim.regime_data(models, "same")
    disjoint = stim.regime_data(models, "disjoint")
    assert len({tuple(m.train.prompt_ids) for m in same}) == 1 and len(same[0].train.prompt_ids) == 13
    parts = [set(m.train.prompt_ids) for m in disjoint]
    assert set.union(*parts) == set(d.prompt_ids) and sum(map(len, parts)) == len(d.prompt_ids)
    assert disjoint[0].train.prompt_ids == same[0].train.prompt_ids  # part 0 is the shared one
    assert all(m.val is d and m.heldout is d for m in same + disjoint)  # validation / held-out untouched
    assert stim.regime_data(models, "all") == models
    with pytest.raises(ValueError):
        stim.regime_data(models, "half")


def test_stimuli_report_reads_the_ratio_and_its_ci(tmp_path):
    stim = _load("stimuli")
    rows = []
    for regime, uni in (("same", 0.52), ("disjoint", 0.45)):
        for m in ("a", "b"):
            for kind, kl in (("cloner", 0.50), ("universal", uni)):
                lo, hi = (uni / 0.5 - 0.01, uni / 0.5 + 0.01) if kind == "universal" else (float("nan"),) * 2
                rows.append(dict(regime=regime, predictor=kind, model=m, n_train_prompts=10, val_kl=0.3, best_epoch=3,
                                 epochs_run=6, seconds=1.0, heldout_kl=kl, positional_kl=1.0, ratio_positional=kl,
                                 ind_mass=0.4, ind_mass_true=0.6, ratio_lo=lo, ratio_hi=hi))
    stim.write_report(pd.DataFrame(rows), tmp_path)
    md = (tmp_path / "stimuli.md").read_text()
    assert "| same | | universal / cloner [95 % CI] | 1.040 [1.030, 1.050] | 1.040 [1.030, 1.050] |" in md
    assert "| disjoint | 10 (20) | universal |" in md  # the shared network saw both parts
    assert (tmp_path / "stimuli.png").stat().st_size > 0


def test_every_experiment_the_report_includes_is_a_dependency_of_the_report_stage():
    import yaml

    from attendome.report import EXPERIMENTS

    deps = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["report"]["deps"]
    included = {rel for rel, _, _ in EXPERIMENTS}
    assert included == {d for d in deps if d.startswith("reports/")}
    for rel, cmd, _ in EXPERIMENTS:  # each names the script that writes it, with that folder as --out
        folder = str(Path(rel).parent)
        scripts = [w for w in cmd.split() if w.startswith("experiments/") and w.endswith(".py")]
        assert f"--out {folder}" in cmd and scripts and all((ROOT / w).is_file() for w in scripts), cmd


def test_stimuli_regimes_need_the_shared_split():
    from attendome.space.universal import ModelData

    stim = _load("stimuli")
    a, b = _segment_data(30, 9), _segment_data(30, 9)
    b.prompt_ids[0] = "other"
    with pytest.raises(ValueError, match="shared split"):
        stim.regime_data([ModelData("a", a, a, a, 1, 1), ModelData("b", b, b, b, 1, 1)], "disjoint")


def test_stimuli_scarce_regimes_give_every_model_the_same_nested_subset_with_each_kind_share():
    from attendome.space.universal import ModelData

    stim = _load("stimuli")
    d = _segment_data(30, 10)
    models = [ModelData(k, d, d, d, 1, 1) for k in ("a", "b")]
    small, large = stim.regime_data(models, "n=8"), stim.regime_data(models, "n=20")
    assert len({tuple(m.train.prompt_ids) for m in small}) == 1  # the same prompts for every model
    assert len(small[0].train.prompt_ids) == 8 and len(large[0].train.prompt_ids) == 20
    assert [sum(k == "repeat" for k in m.train.kinds) for m in (small[0], large[0])] == [2, 5]  # kinds' share
    assert set(small[0].train.prompt_ids) <= set(large[0].train.prompt_ids)  # nested
    assert all(m.val is d and m.heldout is d for m in small)
    for bad in ("n=0", "n=x"):
        with pytest.raises(ValueError, match="n=N"):
            stim.regime_data(models, bad)
    assert stim.regime_order(["n=48", "all", "n=8", "same"]) == ["n=8", "n=48", "same", "all"]


def test_sharing_report_lists_each_transfer_budget_and_reads_earlier_csvs_without_one(tmp_path):
    sharing = _load("sharing")
    var = pd.DataFrame([dict(variant=v, settings="{}", model=m, best_val_kl=val, best_epoch=5, gap=0.02, val_kl=val,
                             heldout_kl=0.3, ratio_positional=0.6, ratio_cloner=1.01, ind_mass=0.4, ind_mass_true=0.6)
                        for v, val in (("default", 0.25), ("shared bank R=32", 0.24)) for m in ("a", "b")])
    tr = pd.DataFrame([dict(family="fa", model="a", budget=b, heldout_kl=0.3 * r, joint_heldout_kl=0.3, ratio_joint=r,
                            ratio_positional=0.6, best_epoch=3, induction_ap=0.3, joint_induction_ap=0.3,
                            chance_ap=0.04, n_queries=5) for b, r in ((1.0, 1.061), (4.0, 1.02))])
    for name, df in (("variants", var), ("transfer", tr)):
        df.to_csv(tmp_path / f"{name}.csv", index=False)
    (tmp_path / "curve.csv").write_text("\n")
    assert sharing.main(["--report-only", "--out", str(tmp_path)]) == 0
    md = (tmp_path / "sharing.md").read_text()
    assert "| shared bank R=32 (best on validation) |" in md  # the lower validation KL, not held-out
    assert "| fa | a | x1 (like for like) | 1.061 |" in md and "| fa | a | x4 | 1.020 |" in md
    tr.drop(columns="budget").head(1).to_csv(tmp_path / "transfer.csv", index=False)  # an earlier run's file
    assert sharing.main(["--report-only", "--out", str(tmp_path)]) == 0
    assert "| fa | a | x1 (like for like) | 1.061 |" in (tmp_path / "sharing.md").read_text()
    with pytest.raises(SystemExit):
        sharing.main(["--transfer-budgets", "0", "--out", str(tmp_path)])


def test_transfer_breakdown_by_head_type_and_depth_against_hand_computed_shares(tmp_path):
    sharing = _load("sharing")
    # 6 layers x 1 head; layers 0-1 first third, 2-3 second, 4-5 third. Excess (transfer - joint):
    # 0.0, 0.1, 0.0, 0.1, 0.2, 0.0 -> total 0.4
    th = pd.DataFrame(dict(family="f", model="m", budget=1.0, layer=range(6), head=0, n_layers=6,
                           kl_joint=[0.2, 0.2, 0.4, 0.4, 0.2, 0.2], kl_transfer=[0.2, 0.3, 0.4, 0.5, 0.4, 0.2],
                           types=["", "induction", "", "induction;retrieval", "previous_token", None]))
    th = pd.concat([th, th.assign(budget=4.0, kl_transfer=th.kl_joint)])  # other budgets are not summed up
    bd = sharing.transfer_breakdown(th).set_index("group")
    assert list(bd.index) == ["induction", "previous_token", "retrieval", "no type",
                              "layers 1st third", "layers 2nd third", "layers 3rd third"]
    assert bd.loc["induction"].n_heads == 2
    assert bd.loc["induction"].ratio == pytest.approx(0.8 / 0.6)
    assert bd.loc["induction"].excess_share == pytest.approx(0.5)
    assert bd.loc["no type"].n_heads == 3 and bd.loc["no type"].excess_share == pytest.approx(0.0)
    assert bd.loc["previous_token"].excess_share == pytest.approx(0.5)
    thirds = bd.loc[["layers 1st third", "layers 2nd third", "layers 3rd third"]]
    assert thirds.excess_share.tolist() == pytest.approx([0.25, 0.25, 0.5])
    # --append keeps the other families' rows of an earlier run and replaces the rerun family's
    old = pd.DataFrame(dict(family=["f", "g"], v=[1, 2]))
    kept = sharing._keep_other_families(old, pd.DataFrame(dict(family=["f"], v=[3])), ["f"])
    assert sorted(zip(kept.family, kept.v)) == [("f", 3), ("g", 2)]
    assert sharing._keep_other_families(old, pd.DataFrame(), []).equals(old)  # --no-transfer: all kept
    old = pd.DataFrame(dict(family=["f", "f", "g"], budget=[1.0, 4.0, 1.0], v=[1, 2, 3]))
    kept = sharing._keep_other_families(old, pd.DataFrame(dict(family=["f"], budget=[1.0], v=[9])), ["f"], [1.0])
    assert list(zip(kept.family, kept.budget, kept.v)) == [("f", 1.0, 9), ("f", 4.0, 2), ("g", 1.0, 3)]
    # the report shows the table
    var = pd.DataFrame([dict(variant="default", settings="{}", model="m", best_val_kl=0.25, best_epoch=5, gap=0.02,
                             val_kl=0.25, heldout_kl=0.3, ratio_positional=0.6, ratio_cloner=1.0, ind_mass=0.4,
                             ind_mass_true=0.6)])
    var.to_csv(tmp_path / "variants.csv", index=False)
    (tmp_path / "curve.csv").write_text("\n")
    (tmp_path / "transfer.csv").write_text("\n")
    th.to_csv(tmp_path / "transfer_heads.csv", index=False)
    assert sharing.main(["--report-only", "--out", str(tmp_path)]) == 0
    assert "| m | induction | 2 | 0.3000 | 0.4000 | 1.333 | 50% |" in (tmp_path / "sharing.md").read_text()
    with pytest.raises(SystemExit, match="not a family"):
        sharing.main(["--families", "no-such-family", "--out", str(tmp_path)])


def test_replicates_report_sets_one_replicate_beside_several():
    rep = _load("replicates")

    def board(n, umap, sd, diff, ratio):
        d = {"mean": diff, "n_queries": 4, "ci95_by_model": [diff - 0.01, diff + 0.01]}
        return {"methods": {m: {"induction": {"all": {"map": {"mean": umap if m == "universal" else 0.2, "chance": 0.05,
                                                             "ci95_by_model": [0.1, 0.5], "seed_sd": sd,
                                                             "n_seeds": n}}}}
                            for m in ("universal", "cloner")},
                "differences": {"induction": {f"universal-{o}": d for o in ("rsa", "cloner", "depth_stats")}},
                "reconstruction": {"a": {"universal_over_cloner": ratio, "universal_over_cloner_ci95": [ratio - .002,
                                                                                                       ratio + .002],
                                         "universal_over_positional": 0.6, "control": False}}}

    one, many = board(1, 0.40, None, -0.065, 1.009), board(3, 0.45, 0.012, 0.030, 0.991)
    lines = "\n".join(rep.comparison(one, many))
    assert "| induction | 0.400 | 0.450 ± 0.012 | 0.200 ± 0.012 | -0.065 [-0.07, -0.06] behind | " \
           "+0.030 [0.02, 0.04] ahead |" in lines
    assert "| a | 1.009 [1.007, 1.011] | 0.991 [0.989, 0.993] | 0.600 | 0.600 |" in lines
    with pytest.raises(SystemExit, match="matching refs"):
        rep.exp_ref("no-such-experiment")


def test_ablation_report_marks_the_lowest_mean_validation_kl_of_each_predictor(tmp_path):
    abl = _load("ablation")
    rows = []
    for row, vals, ratio in (("cloner r=2 + match terms", (0.30, 0.20), 0.5),  # best held out, worse on validation
                             ("cloner r=4 + match terms", (0.20, 0.25), 0.7),
                             ("universal r=2 + match terms", (0.40, 0.40), 0.6)):
        for m, v in zip(("a", "b"), vals):
            rows.append(dict(model=m, row=row, heldout_kl=ratio, ratio=ratio, val_kl=v, ind_mass=0.4,
                             ind_mass_true=0.6, n_induction=2))
    for m in ("a", "b"):
        rows.append(dict(model=m, row="positional", heldout_kl=1.0, ratio=1.0, val_kl=None, ind_mass=0.1,
                         ind_mass_true=0.6, n_induction=2))
    lc = pd.DataFrame([dict(model="a", n_train_prompts=n, heldout_kl=0.5, ratio=0.5, val_kl=0.3) for n in (4, 8)])
    abl.write_report(pd.DataFrame(rows), lc, tmp_path, note="*note*")
    md = (tmp_path / "ablation.md").read_text()
    assert md.startswith("*note*")
    assert "| cloner r=4 + match terms | **0.20000** | 0.25000 | **0.22500** |" in md  # mean 0.225 < 0.25
    assert "| cloner r=2 + match terms | 0.30000 | **0.20000** | 0.25000 |" in md
    assert "| positional | 1.000 |" in md and "| positional | 1.0" not in md.split("Validation KL")[1]
    assert (tmp_path / "learning_curve.png").stat().st_size > 0


def test_stopping_marks_the_lowest_mean_validation_kl_over_replicates_not_one_lucky_replicate(tmp_path):
    stop = _load("stopping")
    # A has the single best replicate (0.20) but the worse mean; B is better on average
    vals = {"default": (0.20, 0.30, 0.31), "patience=15": (0.24, 0.24, 0.25)}
    runs = pd.DataFrame([dict(setting=s, replicate=r, seed=r, best_val_kl=v, best_epoch=5, epochs_run=10,
                              max_epochs=60, gap=0.01, seconds=2.0)
                         for s, vs in vals.items() for r, v in enumerate(vs)])
    curves = pd.DataFrame([dict(setting=s, replicate=r, epoch=e, train_kl=0.2, val_kl=v + 0.01 * (e != 5),
                                lr=0.01, grad_norm=1.0)
                           for s, vs in vals.items() for r, v in enumerate(vs) for e in range(10)])
    rows = {r["setting"]: r for r in stop.summarise(runs)}
    assert rows["patience=15"]["best"] and not rows["default"]["best"]
    assert rows["default"]["mean"] == pytest.approx(0.27)
    assert rows["patience=15"]["sd"] == pytest.approx(pd.Series([0.24, 0.24, 0.25]).std())
    stop._write_report(tmp_path, runs, curves)
    md = (tmp_path / "stopping.md").read_text()
    marked = [line for line in md.splitlines() if "(best on validation)" in line]
    assert len(marked) == 1 and marked[0].startswith("| patience=15")
    assert "0.2000 / 0.3000 / 0.3100" in md and (tmp_path / "stopping.png").stat().st_size > 0


@pytest.mark.parametrize("text,expected", [("default", {}), ("patience=15", {"patience": 15}),
                                           ("shared_hidden=64,min_delta=0", {"shared_hidden": 64, "min_delta": 0}),
                                           ("lr=0.01,prev_keys=false", {"lr": 0.01, "prev_keys": False})])
def test_stopping_settings_parse_embed_params(text, expected):
    from attendome.core.params import EmbedParams

    assert _load("stopping").parse_setting(text, EmbedParams.model_fields)[1] == expected


@pytest.mark.parametrize("text", ["patiance=15", "patience", "shared_hidden=64,foo=1"])
def test_stopping_settings_reject_unknown_keys_before_any_training(text):
    from attendome.core.params import EmbedParams

    with pytest.raises(SystemExit, match="not key=value"):
        _load("stopping").parse_setting(text, EmbedParams.model_fields)
