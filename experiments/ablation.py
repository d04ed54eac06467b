"""Ablation of the Phase 1/2 predictors and a learning curve, on the outputs of a `dvc repro`.

Rows (each one switch in ``params.yaml``, so ``dvc exp run -S ...`` reproduces it in the pipeline):

* ``uniform``, ``positional``: the fixed baselines (every head's own mean positional pattern);
* ``cloner r=R`` with ``clone.match_terms=false``: content through a rank-R bilinear form only;
* ``+ match terms`` (``clone.match_terms=true``, the default);
* ``+ rank 8`` (``clone.rank=8``): more capacity per head;
* ``universal r=R`` / ``universal r=8``: the shared encoder (``embed.rank``), one replicate each;

per causal model: held-out KL, its ratio to the positional baseline, the validation KL every choice
must be made on, and the induction-target mass on held-out repeat probes averaged over the atlas's
induction heads (predicted and true). The learning curve trains the default cloner on 1/4, 1/2 and
all of the training prompts (a seeded random subset with the share of prose and repeat probes kept,
``experiments/_common.take_prompts``; validation and held-out prompts unchanged).

    python experiments/ablation.py --models smollm2-135m gemma3-270m qwen25-coder-05b --out reports/ablation

writes ``ablation.csv``, ``learning_curve.csv``, ``ablation.md`` and ``learning_curve.png``. One
replicate per row (seeds from the model key, as in the pipeline); measured, not tuned on held-out
prompts: held-out numbers are reported, never used to choose.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import induction_mass as _induction_mass, pin_cpu, take_prompts as _subset  # noqa: E402

pin_cpu()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["smollm2-135m", "gemma3-270m", "qwen25-coder-05b"])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--out", default="reports/ablation")
    ap.add_argument("--curve-models", nargs="*", default=["smollm2-135m", "gemma3-270m"])
    ap.add_argument("--no-universal", action="store_true")
    args = ap.parse_args(argv)

    import pandas as pd

    from attendome.clone.evaluate import evaluate_heads
    from attendome.clone.losses import mean_kl
    from attendome.clone.model import train_cloner
    from attendome.clone.positional import mean_positional_pattern
    from attendome.clone.run import head_labels, load_split_data
    from attendome.clone.training import seed_for, torch_threads
    from attendome.core.params import load_params
    from attendome.space.embed import load_model_data
    from attendome.space.universal import train_universal

    params = load_params(args.params)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows, curve = [], []
    tp0 = params.clone
    variants = [(f"cloner r={tp0.rank}, no match terms", dict(match_terms=False)),
                (f"cloner r={tp0.rank} + match terms", dict(match_terms=True)),
                ("cloner r=8 + match terms", dict(match_terms=True, rank=8))]
    with torch_threads(tp0.threads):
        data = {}
        for key in args.models:
            t0 = time.perf_counter()
            sd = load_split_data(key, params)
            data[key] = sd
            n = sd.info["n_layers"] * sd.info["n_heads"]
            ind = head_labels(key=key, positive=params.leaderboard.positive_labels).query("head_type == 'induction'")
            pos = mean_positional_pattern(sd.train)
            base = evaluate_heads(lambda b: None, sd.heldout, n, tp0.batch_prompts, positional=pos,
                                  methods=("uniform", "positional"))
            klpos = base.query("method == 'positional' and kind == 'all' and metric == 'kl'").value.mean()
            for name in ("uniform", "positional"):
                kl = base.query(f"method == '{name}' and kind == 'all' and metric == 'kl'").value.mean()
                pm, tm = _induction_mass(base.rename(columns={}).replace({"method": {name: "model"}}), ind,
                                         sd.info["n_heads"])
                rows.append(dict(model=key, row=name, heldout_kl=kl, ratio=kl / klpos, val_kl=None,
                                 ind_mass=pm, ind_mass_true=tm, n_induction=len(ind)))
            for name, over in variants:
                tp = tp0.model_copy(update=over)
                model, res = train_cloner(sd.train, sd.val, tp, n, seed_for(key, tp.seed, 0), progress=False)
                per = evaluate_heads(model, sd.heldout, n, tp.batch_prompts, methods=("model",))
                kl = per.query("kind == 'all' and metric == 'kl'").value.mean()
                pm, tm = _induction_mass(per, ind, sd.info["n_heads"])
                rows.append(dict(model=key, row=name, heldout_kl=kl, ratio=kl / klpos, val_kl=res.best_val,
                                 ind_mass=pm, ind_mass_true=tm, n_induction=len(ind)))
                print(f"[ablation] {key}: {name}: held-out KL / positional {kl / klpos:.3f} "
                      f"(val {res.best_val:.4f}, best epoch {res.best_epoch})", flush=True)
            for frac in (0.25, 0.5, 1.0) if key in args.curve_models else ():
                k = max(8, int(round(frac * len(sd.train))))
                if frac == 1.0:  # the default cloner, trained above
                    kl = next(r["heldout_kl"] for r in rows if r["model"] == key and r["row"] == variants[1][0])
                    curve.append(dict(model=key, n_train_prompts=k, heldout_kl=kl, ratio=kl / klpos, val_kl=None))
                    continue
                model, res = train_cloner(_subset(sd.train, k), sd.val, tp0, n, seed_for(key, tp0.seed, 0),
                                          progress=False)
                kl = mean_kl(model, sd.heldout, tp0.batch_prompts)
                curve.append(dict(model=key, n_train_prompts=k, heldout_kl=kl, ratio=kl / klpos, val_kl=res.best_val))
                print(f"[ablation] {key}: {k} training prompts: ratio {kl / klpos:.3f}", flush=True)
            print(f"[ablation] {key} took {time.perf_counter() - t0:.0f} s", flush=True)
        if not args.no_universal:
            for rank in sorted({params.embed.rank, 8}):
                tp = params.embed.model_copy(update=dict(rank=rank))
                models = load_model_data(params.model_copy(update={"models": {k: params.models[k] for k in args.models
                                                                               if k in params.models}}), tp)
                enc, res, _ = train_universal(models, tp, seed_for("universal", tp.seed, 0), None, progress=False)
                for m in models:
                    sd = data[m.key]
                    ind = head_labels(key=m.key, positive=params.leaderboard.positive_labels).query(
                        "head_type == 'induction'")
                    per = evaluate_heads(lambda b, k=m.key: enc(k, b), m.heldout, m.n, tp.batch_prompts,
                                         methods=("model",))
                    kl = per.query("kind == 'all' and metric == 'kl'").value.mean()
                    klpos = next(r["heldout_kl"] for r in rows if r["model"] == m.key and r["row"] == "positional")
                    pm, tm = _induction_mass(per, ind, sd.info["n_heads"])
                    rows.append(dict(model=m.key, row=f"universal r={rank} + match terms", heldout_kl=kl,
                                     ratio=kl / klpos, val_kl=res.best_val, ind_mass=pm, ind_mass_true=tm,
                                     n_induction=len(ind)))
                print(f"[ablation] universal r={rank}: val {res.best_val:.4f}", flush=True)
    df, lc = pd.DataFrame(rows), pd.DataFrame(curve)
    df.to_csv(out / "ablation.csv", index=False)
    lc.to_csv(out / "learning_curve.csv", index=False)
    wide = df.pivot_table(index="row", columns="model", values="ratio", sort=False)
    mass = df.pivot_table(index="row", columns="model", values="ind_mass", sort=False)
    lines = ["| row | " + " | ".join(f"{m} KL/positional | {m} ind. mass" for m in wide.columns) + " |",
             "|---|" + "---|---|" * len(wide.columns)]
    for r in wide.index:
        lines.append(f"| {r} | " + " | ".join(f"{wide.loc[r, m]:.3f} | {mass.loc[r, m]:.3f}" for m in wide.columns)
                     + " |")
    true = df.drop_duplicates("model").set_index("model").ind_mass_true
    lines += ["", "True induction-target mass of the atlas's induction heads on held-out repeat probes: "
              + ", ".join(f"{m} {v:.3f}" for m, v in true.items()) + "."]
    (out / "ablation.md").write_text("\n".join(lines) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for m, g in lc.groupby("model"):
        ax.plot(g.n_train_prompts, g.ratio, "o-", label=m)
    ax.set_xscale("log")
    ax.set_xlabel("training prompts")
    ax.set_ylabel("held-out KL / positional KL")
    ax.set_title("cloner learning curve")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "learning_curve.png", dpi=120)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
