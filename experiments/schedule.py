"""Is the universal encoder cut off by its training budget? Epochs and learning rate of ``embed``,
chosen on validation (issue 16: the default run's best epoch was the last, 29 of 30, in every replicate).

On the outputs of a ``dvc repro``: the universal encoder is trained with the ``embed`` stage's settings
and the seed of its replicate 0, once per ``--runs`` setting ``EPOCHS:LR`` (each run its own warm-up +
cosine schedule over its own number of epochs, early stopping as in the stage), and per model the
validation KL, held-out KL / positional and the induction-target mass on held-out repeat probes are
reported (``--set dim=16 dim=64`` varies other ``embed`` params the same way, ``--title`` names the
table). A setting is **chosen by the validation KL** over every model (the held-out columns are read
only after that choice); every run's validation curve is drawn, so one can see whether a longer
schedule still improves at its end. One replicate per setting.

    python experiments/schedule.py --runs 30:0.01 60:0.01 30:0.02 --out reports/schedule
    python experiments/schedule.py --set dim=64,lr=0.005 --append --out reports/schedule   # one more row

writes ``schedule.csv`` (one row per setting and model), ``curves.csv`` (validation and train KL per
epoch of every run), ``schedule.md`` and ``schedule.png``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import induction_mass, pin_cpu  # noqa: E402

pin_cpu()


def _setting(text: str) -> tuple[int, float]:
    try:
        e, lr = text.split(":")
        out = int(e), float(lr)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected EPOCHS:LR, e.g. 60:0.01") from None
    if out[0] < 1 or out[1] <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: epochs must be >= 1 and the learning rate > 0")
    return out


def _override(text: str) -> dict:
    """``dim=64,rank=4`` -> ``{"dim": 64, "rank": 4}`` (values parsed as YAML scalars; checked by the
    params model when applied)."""
    import yaml

    out = {}
    for part in text.split(","):
        k, sep, v = part.partition("=")
        if not sep or not k.strip():
            raise argparse.ArgumentTypeError(f"{text!r}: expected KEY=VALUE[,KEY=VALUE], e.g. dim=64")
        out[k.strip()] = yaml.safe_load(v)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--out", default="reports/schedule")
    ap.add_argument("--runs", nargs="+", type=_setting, default=[(30, 0.01), (60, 0.01), (30, 0.02)],
                    help="settings EPOCHS:LR of the universal encoder (default: 30:0.01 60:0.01 30:0.02)")
    ap.add_argument("--set", dest="overrides", nargs="+", type=_override, default=None,
                    help="instead of --runs: other embed settings, one run each, e.g. --set dim=16 dim=64 "
                         "(at the params' epochs and lr)")
    ap.add_argument("--title", default="Training budget of the universal encoder", help="heading of the table")
    ap.add_argument("--append", action="store_true",
                    help="add these runs to the csv files already in --out (then rewrite the report)")
    ap.add_argument("--report-only", action="store_true", help="rewrite schedule.md / .png from the csv files")
    args = ap.parse_args(argv)
    out = Path(args.out)
    import pandas as pd

    if args.report_only:
        _write_report(out, pd.read_csv(out / "schedule.csv"), pd.read_csv(out / "curves.csv"), args.title)
        return 0

    from attendome.clone.evaluate import evaluate_heads
    from attendome.clone.positional import mean_positional_pattern
    from attendome.clone.run import head_labels
    from attendome.clone.training import seed_for, torch_threads
    from attendome.core.params import load_params
    from attendome.space.embed import load_model_data
    from attendome.space.universal import train_universal

    params = load_params(args.params)
    out.mkdir(parents=True, exist_ok=True)
    base = params.embed
    seed = seed_for("universal", base.seed, 0)
    rows, curves = [], []
    with torch_threads(base.threads):
        models = load_model_data(params, base)
        klpos, ind = {}, {}
        for m in models:  # the positional baseline and the induction heads do not depend on the setting
            b = evaluate_heads(lambda b: None, m.heldout, m.n, base.batch_prompts,
                               positional=mean_positional_pattern(m.train), methods=("positional",))
            klpos[m.key] = float(b.query("kind == 'all' and metric == 'kl'").value.mean())
            ind[m.key] = head_labels(key=m.key, positive=params.leaderboard.positive_labels).query(
                "head_type == 'induction'")
        runs = ([({"epochs": e, "lr": lr}, f"{e} epochs, lr {lr:g}") for e, lr in args.runs] if not args.overrides
                else [(o, ", ".join(f"{k} {v}" for k, v in o.items()) + ("" if "lr" in o else f", lr {base.lr:g}"))
                      for o in args.overrides])
        for update, name in runs:
            unknown = set(update) - set(type(base).model_fields)
            if unknown:
                raise SystemExit(f"error: --set {sorted(unknown)}: not embed params")
            tp = type(base).model_validate({**base.model_dump(), **update})
            epochs, lr = tp.epochs, tp.lr
            t0 = time.perf_counter()
            enc, res, _ = train_universal(models, tp, seed, None, progress=False, desc=name)
            secs = time.perf_counter() - t0
            print(f"[schedule] {name}: val {res.best_val:.4f} (best epoch {res.best_epoch} of {res.epochs_run} run, "
                  f"{secs:.0f} s)", flush=True)
            for h in res.history:
                curves.append(dict(setting=name, epochs=epochs, lr=lr, epoch=h["epoch"], val_kl=h["val_kl"],
                                   train_kl=h["train_kl"], lr_now=h["lr"]))
            for m in models:
                per = evaluate_heads(lambda b, k=m.key: enc(k, b), m.heldout, m.n, base.batch_prompts,
                                     methods=("model",))
                kl = float(per.query("kind == 'all' and metric == 'kl'").value.mean())
                pm, tm = induction_mass(per, ind[m.key], m.n_heads)
                rows.append(dict(setting=name, epochs=epochs, lr=lr, dim=tp.dim, model=m.key,
                                 control=params.is_control(m.key),
                                 best_val_kl=res.best_val, best_epoch=res.best_epoch, epochs_run=res.epochs_run,
                                 seconds=round(secs, 1), heldout_kl=kl, ratio_positional=kl / klpos[m.key],
                                 ind_mass=pm, ind_mass_true=tm))
    df, cv = pd.DataFrame(rows), pd.DataFrame(curves)
    if args.append and (out / "schedule.csv").exists():
        df = pd.concat([pd.read_csv(out / "schedule.csv"), df], ignore_index=True)
        cv = pd.concat([pd.read_csv(out / "curves.csv"), cv], ignore_index=True)
    df.to_csv(out / "schedule.csv", index=False)
    cv.to_csv(out / "curves.csv", index=False)
    _write_report(out, df, cv, args.title)
    return 0


def _write_report(out: Path, df, cv, title: str = "Training budget of the universal encoder") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    per = df.groupby("setting", sort=False).first()
    chosen = per.best_val_kl.idxmin()  # on validation only
    models = list(dict.fromkeys(df.model))
    lines = [f"## {title} (one replicate per setting; chosen on validation)", "",
             "| setting | val KL (all models) | best epoch / run | seconds | "
             + " | ".join(f"{m} KL/pos · ind. mass" for m in models) + " |",
             "|---|---|---|---|" + "---|" * len(models)]
    for name, g in df.groupby("setting", sort=False):
        g = g.set_index("model").loc[models]
        r0 = g.iloc[0]
        cells = [f"{r.ratio_positional:.3f} · {r.ind_mass:.2f}" for r in g.itertuples()]
        tag = " (chosen on validation)" if name == chosen else ""
        lines.append(f"| {name}{tag} | {r0.best_val_kl:.4f} | {int(r0.best_epoch)} / {int(r0.epochs_run)} | "
                     f"{r0.seconds:.0f} | " + " | ".join(cells) + " |")
    lines += ["", "Validation KL: mean row KL over every head of every model on the validation prompts (lower is "
              "better). KL/pos: held-out KL over the positional baseline (lower is better; 1 = no better than "
              "each head's positional habit). ind. mass: predicted attention mass on the induction target on "
              "held-out repeat probes, averaged over the atlas's induction heads (true mass in `schedule.csv`). "
              "Seconds: training alone, 2 torch threads.", ""]
    (out / "schedule.md").write_text("\n".join(lines))
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    for name, g in cv.groupby("setting", sort=False):
        ax.plot(g.epoch + 1, g.val_kl, "-", lw=1.2, label=f"{name} (val)")
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation KL, all models (lower = better)")
    lo = cv.val_kl.min()
    ax.set_ylim(lo * 0.98, lo * 1.25)
    ax.legend(fontsize=7)
    ax.set_title(f"universal encoder: validation curves ({title.lower()})", fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "schedule.png", dpi=120)
    print("\n".join(lines))


if __name__ == "__main__":
    raise SystemExit(main())
