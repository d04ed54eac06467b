"""Early stopping and the shared feature network of the universal encoder, over replicates
(issue 16, item 1), on the outputs of a ``dvc repro``.

One replicate of the universal encoder can end far too soon: with ``patience`` 6 and ``min_delta``
0.001, six epochs that each improve the validation KL by less than 0.1 % stop training, and
exploratory replicates of the default reached validation KL 0.2433 / 0.2416 / 0.2559 (best epochs
43 / 55 / 16). A choice read off replicate 0 alone (as every earlier table did) is then a choice
about one draw of the seed. This script trains each setting with the pipeline's seeds of replicates
``0 .. R-1`` (``seed_for("universal", embed.seed, r)``: replicate 0 is the ``embed`` stage's run) and
reports the validation KL per replicate, its mean and spread, the chosen and the last epoch, and the
wall time; the setting with the lowest mean validation KL is marked. Held-out prompts are not read.

A setting is ``name=key=value,key=value`` over ``embed`` params plus ``shared_hidden`` (the shared
feature network of :class:`attendome.space.universal.UniversalEncoder`, when it is not a param);
``default`` is the params as they are.

    python experiments/stopping.py --settings patience=6,shared_hidden=0 shared_hidden=0 patience=6 \
        default --replicates 3 --out reports/stopping

(the committed report: the defaults before and after this choice, ``embed.patience`` 6 -> 15 and
``embed.shared_hidden`` 0 -> 64, 35 min 42 s on 2 cores, measured alone)

writes ``runs.csv`` (one row per setting and replicate), ``curves.csv`` (the validation and training
KL of every epoch of every run), ``stopping.md`` and ``stopping.png`` (the validation curves, the
chosen epoch marked: look at them before trusting a choice).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import pin_cpu  # noqa: E402

pin_cpu()

KW_ONLY = ("shared_rank", "shared_hidden")  # keywords of train_universal (shared_hidden is also an embed param)


def parse_setting(text: str, fields) -> tuple[str, dict]:
    """``"default"`` or ``"key=value,key=value"`` -> ``(label, switch)``; values are int, float or bool.

    Raises:
        SystemExit: on a key that is neither an ``embed`` param nor a shared-capacity keyword.
    """
    if text == "default":
        return "default", {}
    switch = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep or (key not in fields and key not in KW_ONLY):
            raise SystemExit(f"error: setting {text!r}: {part!r} is not key=value over embed params "
                             f"({', '.join(sorted(fields))}) or {', '.join(KW_ONLY)}")
        v = value.strip()
        switch[key] = (v.lower() == "true") if v.lower() in ("true", "false") else (
            int(v) if v.lstrip("-").isdigit() else float(v))
    return text, switch


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--out", default="reports/stopping")
    ap.add_argument("--settings", nargs="+", default=["default", "patience=15"])
    ap.add_argument("--replicates", type=int, default=3)
    ap.add_argument("--report-only", action="store_true", help="rewrite stopping.md and stopping.png from the CSVs")
    ap.add_argument("--note", default="", help="a line above the table (e.g. the params the runs were made at)")
    ap.add_argument("--append", action="store_true",
                    help="keep the rows of runs.csv / curves.csv whose settings this run does not train")
    args = ap.parse_args(argv)
    out = Path(args.out)
    if args.report_only:
        import pandas as pd

        _write_report(out, pd.read_csv(out / "runs.csv"), pd.read_csv(out / "curves.csv"), args.note)
        return 0
    if args.replicates < 1:
        raise SystemExit(f"error: --replicates {args.replicates}: must be >= 1")

    from attendome.core.params import EmbedParams, load_params

    params = load_params(args.params)
    settings = [parse_setting(s, EmbedParams.model_fields) for s in args.settings]  # checked before any load

    import pandas as pd

    from attendome.clone.training import seed_for, torch_threads
    from attendome.space.embed import load_model_data
    from attendome.space.universal import train_universal

    out.mkdir(parents=True, exist_ok=True)
    runs, curves = [], []
    if args.append and (out / "runs.csv").exists():  # earlier settings first, in their order
        labels = {label for label, _ in settings}
        runs = [r for r in pd.read_csv(out / "runs.csv").to_dict("records") if r["setting"] not in labels]
        curves = [r for r in pd.read_csv(out / "curves.csv").to_dict("records") if r["setting"] not in labels]
    with torch_threads(params.embed.threads):
        models = load_model_data(params, params.embed)
        for label, switch in settings:
            kw = {k: v for k, v in switch.items() if k in KW_ONLY}
            tp = params.embed.model_copy(update={k: v for k, v in switch.items() if k not in KW_ONLY})
            for r in range(args.replicates):
                seed = seed_for("universal", tp.seed, r)
                t0 = time.perf_counter()
                _, res, _ = train_universal(models, tp, seed, None, progress=False, **kw)
                sec = time.perf_counter() - t0
                h = res.history[res.best_epoch]
                runs.append(dict(setting=label, replicate=r, seed=seed, best_val_kl=res.best_val,
                                 best_epoch=res.best_epoch, epochs_run=res.epochs_run, max_epochs=res.max_epochs,
                                 gap=h["val_kl"] - h["train_kl"], seconds=sec))
                curves += [dict(setting=label, replicate=r, **e) for e in res.history]
                print(f"[stopping] {label}, replicate {r}: val {res.best_val:.4f} (epoch {res.best_epoch} of "
                      f"{res.epochs_run} run, {sec:.0f} s)", flush=True)
                pd.DataFrame(runs).to_csv(out / "runs.csv", index=False)  # progress survives an interruption
                pd.DataFrame(curves).to_csv(out / "curves.csv", index=False)
    _write_report(out, pd.DataFrame(runs), pd.DataFrame(curves), args.note)
    return 0


def summarise(runs):
    """Per setting: mean and sample SD of the validation KL over replicates, the replicates' values,
    best epochs, epochs run and mean seconds; sorted as given. ``best`` marks the lowest mean."""
    import numpy as np

    rows = []
    for label, g in runs.groupby("setting", sort=False):
        g = g.sort_values("replicate")
        rows.append(dict(setting=label, n=len(g), mean=float(g.best_val_kl.mean()),
                         sd=float(g.best_val_kl.std(ddof=1)) if len(g) > 1 else np.nan,
                         values=" / ".join(f"{v:.4f}" for v in g.best_val_kl),
                         epochs=" / ".join(f"{b} of {e}" for b, e in zip(g.best_epoch, g.epochs_run)),
                         gap=float(g.gap.mean()), seconds=float(g.seconds.mean())))
    best = min(rows, key=lambda r: r["mean"])["setting"]
    for r in rows:
        r["best"] = r["setting"] == best
    return rows


def _write_report(out: Path, runs, curves, note: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = summarise(runs)
    lines = ([note, ""] if note else []) + [
             "## Early stopping and the shared feature network, over replicates (validation only)", "",
             "| setting | replicates | val KL mean ± SD | per replicate | chosen epoch of epochs run | "
             "gap val-train | seconds per run |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        mark = " (best on validation)" if r["best"] else ""
        lines.append(f"| {r['setting']}{mark} | {r['n']} | {r['mean']:.4f} ± {r['sd']:.4f} | {r['values']} | "
                     f"{r['epochs']} | {r['gap']:.3f} | {r['seconds']:.0f} |")
    lines += ["", "Validation KL: mean KL (nats per query row) of the universal encoder on every model's validation "
              "prompts at its chosen epoch (lower is better). Replicate r uses the pipeline's seed of replicate r "
              "(replicate 0 is the embed stage's run). Seconds: wall time of one training run on this machine "
              "(2 threads), including the early stop. Two settings that differ only in patience follow the same "
              "trajectory until the shorter one stops (their curves overlap in the plot).", ""]
    (out / "stopping.md").write_text("\n".join(lines))
    fig, ax = plt.subplots(figsize=(7, 4))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (label, g) in enumerate(curves.groupby("setting", sort=False)):
        for r, c in g.groupby("replicate"):
            ax.plot(c.epoch, c.val_kl, color=colors[i % len(colors)], lw=1, alpha=0.8,
                    label=label if r == 0 else None)
            b = runs.query("setting == @label and replicate == @r").iloc[0]
            ax.plot([b.best_epoch], [b.best_val_kl], "o", color=colors[i % len(colors)], ms=4)
    lo = float(curves.val_kl.min())
    ax.set_ylim(lo - 0.005, lo + 0.06)
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation KL (lower = better)")
    ax.set_title("universal encoder: validation curves (dot = chosen epoch)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "stopping.png", dpi=120)
    print("\n".join(lines))


if __name__ == "__main__":
    raise SystemExit(main())
