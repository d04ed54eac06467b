"""Retrieval at long context: time and peak memory of one teacher-forced trial per context length.

Each (model, length, implementation) runs in a fresh process, so its peak RSS is its own:
``memory_efficient`` (sdpa prefill, attention probabilities only for the scored rows) and, up to
``--eager-max`` tokens, the eager reference (the full T x T probabilities of every layer). Peak RSS is
reported beside the RSS after the model loaded, the trial was built and a 64-token warm-up trial ran;
the difference is what the long trial itself needs.

    python experiments/long_context.py --models smollm2-135m gemma3-270m --lengths 1024 4096 8192 16384 \\
        --out reports/long_context.csv

Writes the CSV and a PNG beside it (time and peak memory against context length). Lengths beyond a
model's positions are skipped with a note.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kilobytes


def one(model: str, length: int, memory_efficient: bool, params_path: str) -> dict:
    """Run in the child process: load the model, build one trial of ``length`` tokens, score it."""
    import torch

    from attendome.atlas.retrieval import make_trials, teacher_forced_hits
    from attendome.core.models import load_config, load_model
    from attendome.core.params import RetrievalParams, load_params
    from attendome.stage import set_threads

    set_threads(0)
    params = load_params(params_path)
    config = load_config(model, params)[0]  # the config alone: a length the model cannot take loads no weights
    positions = getattr(config.get_text_config(), "max_position_embeddings", None)
    if positions and length + 64 > positions:
        return {"model": model, "length": length, "skipped": f"beyond the model's {positions} positions"}
    lm = load_model(model, params)
    trial = make_trials(lm.tokenizer, RetrievalParams(context_lengths=(length,), depths=(0.5,), needles_per_cell=1))[0]
    with torch.no_grad():  # a short warm-up trial: one-off allocations (thread pools, kernels) are not the trial's
        short = make_trials(lm.tokenizer, RetrievalParams(context_lengths=(64,), depths=(0.5,), needles_per_cell=1))[0]
        teacher_forced_hits(lm, short, memory_efficient)
    loaded = _rss_mb()
    t0 = time.perf_counter()
    with torch.no_grad():
        hits = teacher_forced_hits(lm, trial, memory_efficient)
    return {"model": model, "length": length, "tokens": int(len(trial.prompt) + len(trial.answer)),
            "implementation": "sdpa prefill + scored rows" if memory_efficient else "eager (full T x T)",
            "seconds": round(time.perf_counter() - t0, 2), "rss_after_load_mb": round(loaded),
            "peak_rss_mb": round(_rss_mb()), "trial_mb": round(_rss_mb() - loaded),
            "best_head_hits": float(hits.max()), "threads": torch.get_num_threads()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["smollm2-135m", "gemma3-270m"])
    ap.add_argument("--lengths", nargs="+", type=int, default=[1024, 4096, 8192, 16384])
    ap.add_argument("--eager-max", type=int, default=4096, help="longest context run with the eager reference")
    ap.add_argument("--params", default=str(ROOT / "params.yaml"))
    ap.add_argument("--out", default=str(ROOT / "reports/long_context.csv"))
    ap.add_argument("--child", nargs=3, metavar=("MODEL", "LENGTH", "MEMORY_EFFICIENT"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        m, n, me = args.child
        print(json.dumps(one(m, int(n), me == "1", args.params)))
        return 0
    import pandas as pd

    rows = []
    for m in args.models:
        for n in args.lengths:
            for me in (True, False):
                if not me and n > args.eager_max:
                    continue
                res = subprocess.run([sys.executable, __file__, "--child", m, str(n), "1" if me else "0",
                                      "--params", args.params], capture_output=True, text=True,
                                     env=dict(os.environ, PYTHONPATH=str(ROOT)))
                if res.returncode != 0:
                    print(res.stderr[-2000:], file=sys.stderr)
                    rows.append({"model": m, "length": n, "implementation": "sdpa" if me else "eager",
                                 "skipped": f"failed (exit {res.returncode})"})
                    continue
                row = json.loads(res.stdout.strip().splitlines()[-1])
                print(row, file=sys.stderr, flush=True)
                rows.append(row)
    df = pd.DataFrame(rows)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(out, index=False)
    _plot(df, out.with_suffix(".png"))
    print(f"wrote {out} and {out.with_suffix('.png')}")
    return 0


def _plot(df, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = df[df.get("seconds").notna()] if "seconds" in df else df.iloc[0:0]
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    for (m, impl), g in ok.groupby(["model", "implementation"]):
        g = g.sort_values("length")
        style = "-o" if impl.startswith("sdpa") else "--x"
        a.plot(g["length"], g["seconds"], style, label=f"{m}, {impl}")
        b.plot(g["length"], g["trial_mb"], style, label=f"{m}, {impl}")
    for ax, lab in ((a, "seconds per trial"), (b, "peak RSS above the loaded model (MB)")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("context length (tokens)")
        ax.set_ylabel(lab)
        ax.legend(fontsize=7)
    fig.suptitle("teacher-forced retrieval, one trial (2-core CPU)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)


if __name__ == "__main__":
    raise SystemExit(main())
