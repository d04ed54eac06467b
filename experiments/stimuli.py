"""Does sharing pay when the models see different prompts? (issue 16, item 1: what limits sharing)

In the paper the universal encoder follows ("The Wisdom of a Crowd of Brains", arXiv 2406.12179) the
subjects saw *different* images, so the shared network pools stimuli that no single subject's model
has. In the pipeline every model's heads are fitted on the *same* training prompts, so the shared
network sees no prompt that a per-head cloner has not seen. This experiment separates the two, on the
outputs of a ``dvc repro`` (the pipeline's features, segment attention and splits):

The training prompts are cut into K parts (K = number of models; seeded, each part keeps each prompt
kind's share, :func:`_common.split_prompts`). Three regimes, each with the per-head cloners (``clone``
settings) and the universal encoder (``embed`` settings) trained on the same models, one replicate,
the pipeline's seeds, every epoch chosen on the (full, unchanged) validation split:

* ``same``: every model trains on part 0 (1/K of the prompts; the shared network sees 1/K of them);
* ``disjoint``: model i trains on part i (the same amount per model; the shared network sees all);
* ``all``: every model on every training prompt (the pipeline's setting, for these models).

Reported per model and regime: held-out KL / positional (the positional pattern of each head from
*all* training prompts, fixed across regimes, so the columns compare), the induction-target mass of
the atlas's induction heads on held-out repeat probes, and universal / cloner held-out KL with its
paired bootstrap CI over heads (:func:`attendome.board.metrics.ratio_ci`). If what keeps sharing from
paying is that every model saw the same prompts, universal / cloner falls below 1 under ``disjoint``
and not under ``same``.

``--sizes N ...`` adds scarce-data regimes ``n=N``: every model on the same N training prompts (a
seeded subset keeping each kind's share, nested across N). In the paper sharing pays because no single
subject has enough data for its own model; if that is the mechanism here too, universal / cloner falls
below 1 as N shrinks, and the size where it crosses says how data-starved a head must be for sharing
to pay. ``--append`` keeps the rows of the regimes not rerun:

    python experiments/stimuli.py --regimes --sizes 16 48 --append --out reports/stimuli

    python experiments/stimuli.py --out reports/stimuli

writes ``stimuli.csv`` (one row per regime, predictor and model), ``stimuli.md`` and ``stimuli.png``.
Default models: the three real causal models of the default run (about 15 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import induction_mass, pin_cpu, split_prompts, take_prompts  # noqa: E402

pin_cpu()

import numpy as np  # noqa: E402  (after pin_cpu: OpenBLAS reads its core type at import)

REGIMES = ("same", "disjoint", "all")


def regime_order(regimes) -> list[str]:
    """The regimes of a table in the order of the data per model: the scarce-data regimes ``n=N`` by N,
    then ``same``, ``disjoint`` (1/K of the prompts per model) and ``all``."""
    fixed = [r for r in REGIMES if r in set(regimes)]
    return sorted({r for r in regimes if r not in REGIMES}, key=lambda r: int(r.split("=")[1])) + fixed


def regime_data(models: list, regime: str, seed: int = 0) -> list:
    """The :class:`~attendome.space.universal.ModelData` of ``models`` with the training prompts of
    ``regime`` (validation and held-out prompts unchanged): ``same``, ``disjoint``, ``all``, or ``n=N``
    (scarce data: every model on the same N training prompts, a seeded subset that keeps each prompt
    kind's share, :func:`_common.take_prompts`; nested, so ``n=24`` lies inside ``n=48``)."""
    from attendome.space.universal import ModelData

    if regime.startswith("n="):
        try:
            n = int(regime[2:])
        except ValueError:
            n = 0
        if n < 1:
            raise ValueError(f"regime {regime!r}: expected n=N with N >= 1 training prompts")
        return [ModelData(m.key, take_prompts(m.train, n, seed), m.val, m.heldout, m.n_layers, m.n_heads)
                for m in models]
    if regime not in REGIMES:
        raise ValueError(f"regime {regime!r}: expected one of {REGIMES} or n=N")
    if regime == "all":
        return list(models)
    if any(m.train.prompt_ids != models[0].train.prompt_ids for m in models):  # part i: the same prompts
        raise ValueError("the models' training prompts differ; the regimes need the pipeline's shared split")
    k = len(models)
    out = []
    for i, m in enumerate(models):
        part = split_prompts(m.train, k, seed)[0 if regime == "same" else i]
        out.append(ModelData(m.key, part, m.val, m.heldout, m.n_layers, m.n_heads))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--models", nargs="+", default=["smollm2-135m", "gemma3-270m", "qwen25-coder-05b"])
    ap.add_argument("--regimes", nargs="*", choices=REGIMES, default=list(REGIMES))
    ap.add_argument("--sizes", nargs="*", type=int, default=[],
                    help="scarce-data regimes n=N: both predictors on the same N training prompts per model")
    ap.add_argument("--append", action="store_true",
                    help="keep the rows of stimuli.csv whose regimes this run does not train")
    ap.add_argument("--out", default="reports/stimuli")
    ap.add_argument("--report-only", action="store_true", help="rewrite stimuli.md / .png from stimuli.csv")
    ap.add_argument("--note", default="", help="with --report-only: a line above the table (e.g. the params)")
    args = ap.parse_args(argv)
    out = Path(args.out)
    import pandas as pd

    if args.report_only:
        write_report(pd.read_csv(out / "stimuli.csv"), out, args.note)
        return 0

    from attendome.board.metrics import ratio_ci
    from attendome.clone.evaluate import evaluate_heads
    from attendome.clone.model import train_cloner
    from attendome.clone.positional import mean_positional_pattern
    from attendome.clone.run import head_labels, load_split_data
    from attendome.clone.training import seed_for, torch_threads
    from attendome.core.params import load_params
    from attendome.space.universal import ModelData, train_universal

    params = load_params(args.params)
    unknown = [k for k in args.models if k not in params.models]
    if unknown:
        raise SystemExit(f"error: {unknown} not in this run's models {list(params.models)}")
    ce, ee = params.clone, params.embed
    for f in ("feature_dims", "position_dims"):  # one data load serves both predictors
        if getattr(ce, f) != getattr(ee, f):
            raise SystemExit(f"error: clone.{f} != embed.{f}; this experiment loads the data once")
    regimes = list(args.regimes) + [f"n={n}" for n in args.sizes]
    if not regimes:
        raise SystemExit("error: nothing to train: give --regimes or --sizes")
    for r in regimes:  # checked before any data loads
        if r.startswith("n=") and int(r[2:]) < 1:
            raise SystemExit(f"error: --sizes {r[2:]}: expected a positive number of training prompts")
    rows = []
    with torch_threads(ee.threads):
        full, positional, ind = [], {}, {}
        for key in args.models:
            sd = load_split_data(key, params, ".", ee)
            full.append(ModelData(key, sd.train, sd.val, sd.heldout, sd.info["n_layers"], sd.info["n_heads"]))
            positional[key] = mean_positional_pattern(sd.train)
            ind[key] = head_labels(key=key, positive=params.leaderboard.positive_labels).query(
                "head_type == 'induction'")
        for regime in regimes:
            models = regime_data(full, regime, ce.seed)
            per_head = {}
            t0 = time.perf_counter()
            enc, res, _ = train_universal(models, ee, seed_for("universal", ee.seed, 0), None, progress=False,
                                          desc=f"universal ({regime})")
            preds = {("universal", m.key): (lambda b, k=m.key: enc(k, b)) for m in models}
            fits = {("universal", m.key): res for m in models}
            secs = {"universal": time.perf_counter() - t0}
            t0 = time.perf_counter()
            for m in models:
                preds["cloner", m.key], fits["cloner", m.key] = train_cloner(
                    m.train, m.val, ce, m.n, seed_for(m.key, ce.seed, 0), progress=False)
            secs["cloner"] = time.perf_counter() - t0
            for (kind, key), pred in preds.items():
                m = next(x for x in models if x.key == key)
                per = evaluate_heads(pred, m.heldout, m.n, ee.batch_prompts, positional=positional[key],
                                     methods=("model", "positional"))
                kl = per.query("method == 'model' and kind == 'all' and metric == 'kl'").set_index("head_index").value
                klp = per.query("method == 'positional' and kind == 'all' and metric == 'kl'").value.mean()
                per_head[kind, key] = kl.sort_index().to_numpy()
                pm, tm = induction_mass(per[per.method.isin(["model", "true"])], ind[key], m.n_heads)
                r = fits[kind, key]
                rows.append(dict(regime=regime, predictor=kind, model=key, n_train_prompts=len(m.train),
                                 val_kl=r.best_val, best_epoch=r.best_epoch, epochs_run=r.epochs_run,
                                 seconds=round(secs[kind], 1), heldout_kl=float(kl.mean()), positional_kl=klp,
                                 ratio_positional=float(kl.mean()) / klp, ind_mass=pm, ind_mass_true=tm,
                                 ratio_lo=np.nan, ratio_hi=np.nan))
            for key in args.models:  # universal / cloner with a paired bootstrap CI over heads
                lo, hi = ratio_ci(per_head["universal", key], per_head["cloner", key])
                for r in rows:
                    if r["regime"] == regime and r["model"] == key and r["predictor"] == "universal":
                        r.update(ratio_lo=lo, ratio_hi=hi)
            print(f"[stimuli] {regime}: " + ", ".join(
                f"{r['model']} {r['predictor']} {r['ratio_positional']:.3f}" for r in rows if r["regime"] == regime),
                flush=True)
    df = pd.DataFrame(rows)
    if args.append and (out / "stimuli.csv").exists():
        old = pd.read_csv(out / "stimuli.csv")
        df = pd.concat([old[~old.regime.isin(regimes)], df], ignore_index=True)
    write_report(df, out)
    return 0


def write_report(df, out: Path, note: str = "") -> None:
    """``stimuli.csv``, ``stimuli.md`` and ``stimuli.png`` from the rows of :func:`main`. ``note``: a
    line above the table."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    df.to_csv(out / "stimuli.csv", index=False)
    models = list(dict.fromkeys(df.model))
    regimes = regime_order(df.regime)
    lines = ([note, ""] if note else []) + [
             "## Sharing and stimuli: the models on the same, on disjoint, or on all training prompts, "
             "and on scarce data (one replicate)", "",
             "| regime | training prompts per model (shared network sees) | predictor | "
             + " | ".join(f"{m} KL/pos · ind. mass" for m in models) + " |",
             "|---|---|---|" + "---|" * len(models)]
    for regime in regimes:
        g = df[df.regime == regime]
        n = int(g.n_train_prompts.iloc[0])
        seen = n if regime != "disjoint" else int(g.drop_duplicates("model").n_train_prompts.sum())
        for kind in ("cloner", "universal"):
            h = g[g.predictor == kind].set_index("model").loc[models]
            lines.append(f"| {regime} | {n} ({seen if kind == 'universal' else n}) | {kind} | "
                         + " | ".join(f"{r.ratio_positional:.3f} · {r.ind_mass:.2f}" for r in h.itertuples()) + " |")
        u = g[g.predictor == "universal"].set_index("model").loc[models]
        c = g[g.predictor == "cloner"].set_index("model").loc[models]
        lines.append(f"| {regime} | | universal / cloner [95 % CI] | "
                     + " | ".join(f"{u.heldout_kl[m] / c.heldout_kl[m]:.3f} [{u.ratio_lo[m]:.3f}, {u.ratio_hi[m]:.3f}]"
                                  for m in models) + " |")
    lines += ["", "KL/pos: held-out KL over each head's positional pattern from all training prompts (lower is "
              "better; the denominator is the same in every regime). ind. mass: predicted attention mass on the "
              "induction target on held-out repeat probes, averaged over the atlas's induction heads (true mass "
              "in `stimuli.csv`). universal / cloner: ratio of mean held-out KL over heads, paired bootstrap CI "
              "over heads (below 1 = sharing pays). Epochs chosen on the full validation split; the universal "
              "encoder trains on these models only (not the pipeline's five).", ""]
    (out / "stimuli.md").write_text("\n".join(lines))
    fig, ax = plt.subplots(figsize=(8.4, 3.6))
    x = np.arange(len(models))
    width = 0.8 / max(len(regimes), 1)
    for i, regime in enumerate(regimes):
        g = df[(df.regime == regime) & (df.predictor == "universal")].set_index("model").loc[models]
        c = df[(df.regime == regime) & (df.predictor == "cloner")].set_index("model").loc[models]
        ratio = g.heldout_kl.to_numpy() / c.heldout_kl.to_numpy()
        err = np.abs(np.vstack([g.ratio_lo.to_numpy(), g.ratio_hi.to_numpy()]) - ratio)
        n = int(g.n_train_prompts.iloc[0])
        label = f"{n} prompts per model" if regime.startswith("n=") else f"{regime} ({n} per model)"
        ax.bar(x + (i - (len(regimes) - 1) / 2) * width, ratio, width, yerr=err, capsize=3, label=label)
    ax.axhline(1.0, color="k", lw=0.8)
    ax.axhline(0.95, color="k", lw=0.8, ls=":", label="target 0.95")
    ax.set_xticks(x, models, fontsize=8)
    ax.set_ylabel("held-out KL universal / cloner\n(< 1: sharing pays)")
    lo = min(0.9, float(np.nanmin(df.ratio_lo)) - 0.02) if df.ratio_lo.notna().any() else 0.9
    ax.set_ylim(lo, max(1.1, float(np.nanmax(df.ratio_hi)) + 0.02) if df.ratio_hi.notna().any() else 1.1)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_title("does sharing pay with different prompts, or with scarce data?", fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "stimuli.png", dpi=120)
    print("\n".join(lines))


if __name__ == "__main__":
    raise SystemExit(main())
