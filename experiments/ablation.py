"""Ablation of the Phase 1/2 predictors and a learning curve, on the outputs of a `dvc repro`.

Rows (each one switch in ``params.yaml``, so ``dvc exp run -S ...`` reproduces it in the pipeline):

* ``uniform``, ``positional``: the fixed baselines (every head's own mean positional pattern);
* ``cloner r=R`` with ``clone.match_terms=false``: content through a rank-R bilinear form only;
* ``+ match terms`` (``clone.match_terms=true``, the default);
* ``cloner r=R + match terms`` for each ``--cloner-ranks`` R (``clone.rank=R``): capacity per head;
* ``universal r=R`` for ``embed.rank`` and each ``--universal-ranks`` R: the shared encoder, trained on
  ``--models`` only (not the pipeline's five), one replicate each;

per causal model: held-out KL, its ratio to the positional baseline, the validation KL every choice
must be made on, and the induction-target mass on held-out repeat probes averaged over the atlas's
induction heads (predicted and true). The learning curve trains the default cloner on 1/4, 1/2 and
all of the training prompts (a seeded random subset with the share of prose and repeat probes kept,
``experiments/_common.take_prompts``; validation and held-out prompts unchanged).

    python experiments/ablation.py --cloner-ranks 4 8 16 --universal-ranks 4 8 --out reports/ablation

A second table lists the validation KL of every trained row (the split ranks are chosen on; the
lowest per predictor and model is marked).

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
    ap.add_argument("--report-only", action="store_true", help="rewrite ablation.md / .png from the CSVs")
    ap.add_argument("--note", default="", help="with --report-only: a line above the tables (e.g. the params)")
    ap.add_argument("--cloner-ranks", nargs="*", type=int, default=[8],
                    help="rows 'cloner r=R + match terms' beside the clone.rank of params (chosen on validation)")
    ap.add_argument("--universal-ranks", nargs="*", type=int, default=[8],
                    help="rows 'universal r=R + match terms' beside the embed.rank of params")
    args = ap.parse_args(argv)
    if args.report_only:
        import pandas as pd

        out = Path(args.out)
        write_report(pd.read_csv(out / "ablation.csv"), pd.read_csv(out / "learning_curve.csv"), out, args.note)
        return 0
    if any(r < 1 for r in args.cloner_ranks + args.universal_ranks):
        raise SystemExit("error: ranks must be >= 1")

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
                (f"cloner r={tp0.rank} + match terms", dict(match_terms=True))]
    variants += [(f"cloner r={r} + match terms", dict(match_terms=True, rank=r))
                 for r in sorted(set(args.cloner_ranks) - {tp0.rank})]
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
            for rank in sorted({params.embed.rank, *args.universal_ranks}):
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
    write_report(pd.DataFrame(rows), pd.DataFrame(curve), out)
    return 0


def write_report(df, lc, out: Path, note: str = "") -> None:
    """``ablation.csv``, ``learning_curve.csv``, ``ablation.md`` and ``learning_curve.png`` from the rows
    of :func:`main` (``--report-only`` rereads the CSVs). ``note``: a line above the tables."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    df.to_csv(out / "ablation.csv", index=False)
    lc.to_csv(out / "learning_curve.csv", index=False)
    wide = df.pivot_table(index="row", columns="model", values="ratio", sort=False)
    mass = df.pivot_table(index="row", columns="model", values="ind_mass", sort=False)
    lines = ([note, ""] if note else []) + [
        "| row | " + " | ".join(f"{m} KL/positional | {m} ind. mass" for m in wide.columns) + " |",
        "|---|" + "---|---|" * len(wide.columns)]
    for r in wide.index:
        lines.append(f"| {r} | " + " | ".join(f"{wide.loc[r, m]:.3f} | {mass.loc[r, m]:.3f}" for m in wide.columns)
                     + " |")
    trained = df[df.val_kl.notna()]
    if not trained.empty:
        val = trained.pivot_table(index="row", columns="model", values="val_kl", sort=False)
        val["mean over models"] = val.mean(axis=1)
        kind = val.index.str.split(" ").str[0]  # cloner / universal: chosen within each predictor
        best = {(k, m): val[kind == k][m].idxmin() for k in set(kind) for m in val.columns}
        lines += ["", "Validation KL (mean row KL over every head on the validation prompts; lower is better; "
                  "**bold**: lowest of its predictor; a params switch is one value for every model, so the "
                  "choice is the lowest mean over models, ties to the smaller rank; the universal rows' number "
                  "is over all their models):", "",
                  "| row | " + " | ".join(val.columns) + " |", "|---|" + "---|" * len(val.columns)]
        for r, k in zip(val.index, kind):
            cells = [(f"**{val.loc[r, m]:.5f}**" if best[k, m] == r else f"{val.loc[r, m]:.5f}") for m in val.columns]
            lines.append(f"| {r} | " + " | ".join(cells) + " |")
    true = df.drop_duplicates("model").set_index("model").ind_mass_true
    lines += ["", "True induction-target mass of the atlas's induction heads on held-out repeat probes: "
              + ", ".join(f"{m} {v:.3f}" for m, v in true.items()) + "."]
    (out / "ablation.md").write_text("\n".join(lines) + "\n")
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
    plt.close(fig)
    print("\n".join(lines))

if __name__ == "__main__":
    raise SystemExit(main())
