"""More training prompts: does the learned space keep improving past the default corpus? (issue 16, item 3)

Builds the Phase 1 data again in a scratch folder with every 24-word window of every offline pydoc
document (``corpus.max_prompts_per_doc`` raised, default 1000 = all; the split is still by document,
with the same seed, so validation and held-out prompts come from the same documents as in the
pipeline, only more of them), for a few models (default SmolLM2 and Gemma-3, the two cheapest to
run), by running the pipeline's own stage scripts (``corpus``, ``features``, ``attention@<model>``)
there. Then trains, one replicate each with the pipeline's seeds, every choice on validation:

* the universal encoder on the first 18 %, 45 % and all training prompts (18 % is about the
  default corpus' 374 prompts), and once with a shared bank of 32 rank-1 forms on all of them;
* the per-head cloners on all of them (is the universal / cloner ratio moved by data?);
* at all the prompts, both predictors at learning rates 0.01 (the default) and 0.003, the rate read
  on validation.

Held-out KL, its ratio to the head's positional baseline (from all training prompts), and the
induction-target mass of the atlas's induction heads on held-out repeat probes.

    python experiments/more_data.py --work /tmp/attendome-more --out reports/more_data

writes ``more_data.csv`` and ``more_data.md`` (about an hour on 2 cores for the two models, from the
steps of the runner it was distilled from, each alone: 17 minutes for the data, 35 for training).
Wall-clock times go to the console only, never into the outputs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import ROOT, induction_mass, pin_cpu, take_prompts  # noqa: E402

pin_cpu()

RUNS = [("universal", {}, 0.18), ("universal", {}, 0.45), ("universal", {}, 1.0),
        ("universal", {"lr": 0.003}, 1.0), ("universal", {"shared_rank": 32}, 1.0),
        ("cloner", {}, 1.0), ("cloner", {"lr": 0.003}, 1.0)]
"""(predictor, switch, fraction of the training prompts). The learning rate is chosen again on
validation at 5.5 times the data (0.01, the default chosen at the default size, against 0.003): with
5.5 times as many steps per epoch the cloners' validation KL rises from the first epoch at 0.01."""


def build(work: Path, models: list[str], per_doc: int) -> None:
    """The corpus, features and segment attention of ``models`` in ``work`` (the stage scripts)."""
    import yaml

    work.mkdir(parents=True, exist_ok=True)
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["models"] = list(models)
    raw["corpus"]["max_prompts_per_doc"] = per_doc
    (work / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    (work / "data").mkdir(exist_ok=True)
    atlas = work / "data" / "atlas.parquet"
    if not atlas.exists():
        atlas.symlink_to(ROOT / "data" / "atlas.parquet")  # head labels of the pipeline's atlas
    env = dict(os.environ)
    steps = [["corpus"], ["features"]] + [["attention", m] for m in models]
    for step in steps:
        out = work / "data" / ("attention/" + step[1] + ".safetensors" if len(step) > 1 else step[0])
        if out.exists() or (step[0] == "features" and (work / "data/features/features.safetensors").exists()):
            continue
        subprocess.run([sys.executable, str(ROOT / "stages" / f"{step[0]}.py"), *step[1:]], cwd=work, env=env,
                       check=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["smollm2-135m", "gemma3-270m"])
    ap.add_argument("--per-doc", type=int, default=1000)
    ap.add_argument("--work", default="/tmp/attendome-more")
    ap.add_argument("--out", default="reports/more_data")
    args = ap.parse_args(argv)
    work, out = Path(args.work), Path(args.out)
    t0 = time.perf_counter()
    build(work, args.models, args.per_doc)
    print(f"[more_data] data built in {time.perf_counter() - t0:.0f} s", flush=True)

    import pandas as pd

    from attendome.clone.evaluate import evaluate_heads
    from attendome.clone.model import train_cloner
    from attendome.clone.positional import mean_positional_pattern
    from attendome.clone.run import head_labels, load_split_data
    from attendome.clone.training import seed_for, torch_threads
    from attendome.core.params import load_params
    from attendome.space.universal import ModelData, train_universal

    params = load_params(str(work / "params.yaml"))
    rows = []
    with torch_threads(params.embed.threads):
        full, positional = {}, {}
        for key in params.models:
            sd = load_split_data(key, params, str(work), params.embed)
            full[key] = ModelData(key, sd.train, sd.val, sd.heldout, sd.info["n_layers"], sd.info["n_heads"])
            positional[key] = mean_positional_pattern(sd.train)
        for kind, switch, frac in RUNS:
            models = [ModelData(m.key, take_prompts(m.train, int(round(frac * len(m.train)))), m.val, m.heldout,
                                m.n_layers, m.n_heads) for m in full.values()]
            t1 = time.perf_counter()
            if kind == "universal":
                kw = {k: v for k, v in switch.items() if k in ("shared_rank", "shared_hidden")}
                tp = params.embed.model_copy(update={k: v for k, v in switch.items() if k not in kw})
                enc, res, _ = train_universal(models, tp, seed_for("universal", tp.seed, 0), None, progress=False,
                                              **kw)
                pred = {m.key: (lambda b, k=m.key: enc(k, b)) for m in models}
                val = {m.key: res.best_val for m in models}
            else:
                tp = params.clone.model_copy(update=switch)
                pred, val = {}, {}
                for m in models:
                    pred[m.key], r = train_cloner(m.train, m.val, tp, m.n, seed_for(m.key, tp.seed, 0), progress=False)
                    val[m.key] = r.best_val
            secs = time.perf_counter() - t1
            for m in models:
                per = evaluate_heads(pred[m.key], m.heldout, m.n, tp.batch_prompts, positional=positional[m.key],
                                     methods=("model", "positional"))
                kl = per.query("method == 'model' and kind == 'all' and metric == 'kl'").value.mean()
                klp = per.query("method == 'positional' and kind == 'all' and metric == 'kl'").value.mean()
                ind = head_labels(str(ROOT), key=m.key, positive=params.leaderboard.positive_labels).query(
                    "head_type == 'induction'")
                pm, tm = induction_mass(per[per.method.isin(["model", "true"])], ind, m.n_heads)
                rows.append(dict(predictor=kind, switch=json.dumps(switch), fraction=frac, model=m.key,
                                 n_train_prompts=len(m.train), val_kl=val[m.key], heldout_kl=kl, positional_kl=klp,
                                 ratio_positional=kl / klp, ind_mass=pm, ind_mass_true=tm))
            print(f"[more_data] {kind} {switch} {frac:g} ({secs:.0f} s): " + ", ".join(
                f"{r['model']} {r['ratio_positional']:.3f}" for r in rows[-len(models):]), flush=True)
    write_report(pd.DataFrame(rows), out)
    return 0


def write_report(df, out: Path) -> None:
    """``more_data.csv`` and ``more_data.md`` from the rows of :func:`main`."""
    out.mkdir(parents=True, exist_ok=True)
    df.to_csv(out / "more_data.csv", index=False)
    lines = ["| predictor | training prompts | " + " | ".join(f"{m} KL/pos · ind. mass" for m in df.model.unique())
             + " |", "|---|---|" + "---|" * df.model.nunique()]
    for (kind, switch, frac), g in df.groupby(["predictor", "switch", "fraction"], sort=False):
        name = kind + ("" if switch == "{}" else f" {switch}")
        if frac == 1.0 and "shared_rank" not in switch:  # mark the learning rate validation prefers
            same = df[(df.predictor == kind) & (df.fraction == 1.0) & ~df.switch.str.contains("shared")]
            best = same.groupby("switch").val_kl.mean().idxmin()
            name += " (lr chosen on validation)" if switch == best else ""
        lines.append(f"| {name} | {g.n_train_prompts.iloc[0]} | "
                     + " | ".join(f"{r.ratio_positional:.3f} · {r.ind_mass:.2f}" for r in g.itertuples()) + " |")
    full = df[(df.fraction == 1.0) & ~df.switch.str.contains("shared")]
    chosen = {k: g.groupby("switch").val_kl.mean().idxmin() for k, g in full.groupby("predictor")}
    if {"universal", "cloner"} <= set(chosen):
        kl = {k: full[(full.predictor == k) & (full.switch == chosen[k])].set_index("model").heldout_kl
              for k in chosen}
        lines += ["", "Held-out KL universal / cloner, each at the learning rate validation chose: "
                  + ", ".join(f"{m} {kl['universal'][m] / kl['cloner'][m]:.3f}" for m in kl["universal"].index)
                  + ". Positional KL on these held-out prompts: "
                  + ", ".join(f"{r.model} {r.positional_kl:.4f}" for r in full.drop_duplicates("model").itertuples())
                  + ". True induction-target mass: "
                  + ", ".join(f"{r.model} {r.ind_mass_true:.2f}" for r in full.drop_duplicates("model").itertuples())
                  + "."]
    (out / "more_data.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    raise SystemExit(main())
