"""The paper setting: cloners and universal encoder with three replicates each, read against the
default's one (issue 16: does a verdict survive the spread over training seeds?).

The default ``dvc repro`` trains one replicate of every predictor (``clone.n_seeds`` /
``embed.n_seeds`` 1) to stay within its time budget; its CIs are bootstraps over heads, models and KV
groups, which leave out how much a second training seed moves the numbers. This script reads the
leaderboard of a run with more replicates (per-query metrics averaged over replicates before the
bootstrap; ``seed_sd`` the spread of each aggregate over replicates) and writes it beside the
default's:

    git clone . ../attendome-replicates && cd ../attendome-replicates && dvc pull
    dvc exp run -n replicates3 -S clone.n_seeds=3 -S embed.n_seeds=3
    cd - && python experiments/replicates.py --leaderboard ../attendome-replicates/metrics/leaderboard.json \
        --out reports/replicates

(the experiment runs in a second clone because ``dvc exp run`` rewrites the workspace's outputs, and
the one-replicate leaderboard to compare with is this checkout's. ``--exp NAME`` reads the
experiment's ``metrics/leaderboard.json`` from its git ref, ``refs/exps/.../NAME``, instead: for a
``dvc exp run --temp``, which leaves the workspace as it is; not tried here.) Writes ``leaderboard.json`` (a copy) and
``replicates.md``: the generated "what the numbers say" and reconstruction table of the replicated
run, and per head type the universal and cloner mAP with their spread over replicates and every
paired difference that decides a target (universal − rsa / cloner / scores / depth / depth_stats),
one replicate against three. Nothing is trained here; the run itself took 42 min 8 s on 2 cores
(clone@* and embed onward, measured alone).
"""

from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path


def exp_ref(name: str, cwd: str = ".") -> str:
    """The git ref of the DVC experiment ``name`` (``refs/exps/<..>/<baseline>/<name>``).

    Raises:
        SystemExit: when no experiment or several experiments have that name.
    """
    refs = subprocess.run(["git", "for-each-ref", "--format=%(refname)", "refs/exps"], cwd=cwd,
                          capture_output=True, text=True, check=True).stdout.split()
    hits = [r for r in refs if r.rsplit("/", 1)[-1] == name]
    if len(hits) != 1:
        known = sorted({r.rsplit("/", 1)[-1] for r in refs}) or ["none"]
        raise SystemExit(f"error: experiment {name!r}: {len(hits)} matching refs (experiments here: "
                         f"{', '.join(known)}); run `dvc exp show` or pass --leaderboard PATH")
    return hits[0]


def n_replicates(board: dict) -> int:
    """How many replicates the universal encoder's mAP of ``board`` averages (1 when not recorded)."""
    return max((t["all"]["map"].get("n_seeds", 1) for t in board["methods"].get("universal", {}).values()
                if "all" in t), default=1)


def _ci(ci, digits: int = 2) -> str:
    return f" [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]" if ci and None not in ci else ""


def comparison(one: dict, many: dict) -> list[str]:
    """Markdown: per head type, mAP and paired differences of one replicate (``one``) and of the
    replicated run (``many``); per real causal model, universal / cloner."""
    from attendome.report import _verdict

    n = n_replicates(many)
    lines = [f"### One replicate (default `dvc repro`) against {n}", "",
             "| head type | universal mAP, 1 | universal mAP, {0} (± sd over replicates) | cloner mAP, {0} (± sd) "
             "| universal − rsa, 1 | universal − rsa, {0} | universal − cloner, {0} | universal − depth_stats, {0} |"
             .format(n),
             "|---|---|---|---|---|---|---|---|"]
    for t, u in many["methods"].get("universal", {}).items():
        if "all" not in u:
            continue
        u1 = one["methods"].get("universal", {}).get(t, {}).get("all", {}).get("map", {})
        c = many["methods"].get("cloner", {}).get(t, {}).get("all", {}).get("map", {})
        m = u["all"]["map"]

        def diff(board, other, t=t):
            d = board.get("differences", {}).get(t, {}).get(f"universal-{other}")
            return f"{d['mean']:+.3f}{_ci(d['ci95_by_model'])} {_verdict(d)}" if d else "n/a"

        sd = f" ± {m['seed_sd']:.3f}" if m.get("seed_sd") is not None else ""
        csd = f" ± {c['seed_sd']:.3f}" if c.get("seed_sd") is not None else ""
        lines.append(f"| {t} | {u1.get('mean', float('nan')):.3f} | {m['mean']:.3f}{sd} | "
                     f"{c.get('mean', float('nan')):.3f}{csd} | {diff(one, 'rsa')} | {diff(many, 'rsa')} | "
                     f"{diff(many, 'cloner')} | {diff(many, 'depth_stats')} |")
    lines += ["", "| model | universal / cloner, 1 | universal / cloner, {0} | universal / positional, 1 | "
              "universal / positional, {0} |".format(n), "|---|---|---|---|---|"]
    for k, r in many.get("reconstruction", {}).items():
        r1 = one.get("reconstruction", {}).get(k, {})
        if r.get("control"):
            continue
        lines.append(f"| {k} | {r1.get('universal_over_cloner', float('nan')):.3f}"
                     f"{_ci(r1.get('universal_over_cloner_ci95'), 3)} | {r['universal_over_cloner']:.3f}"
                     f"{_ci(r.get('universal_over_cloner_ci95'), 3)} | "
                     f"{r1.get('universal_over_positional', float('nan')):.3f} | "
                     f"{r['universal_over_positional']:.3f} |")
    lines += ["", f"With {n} replicates each query's AP (and each head's KL) is the mean over replicates before the "
              "bootstrap, so the CIs are over heads / models of the averaged predictors, and ± sd is the spread "
              "of the aggregate over the replicates (how far one training seed moves it). Verdicts as in the "
              "summary: ahead / behind when the paired by-model CI lies wholly above / below 0.", ""]
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--exp", help="name of the DVC experiment with more replicates (dvc exp run -n NAME)")
    src.add_argument("--leaderboard", help="its metrics/leaderboard.json, read from a file instead")
    ap.add_argument("--baseline", default="metrics/leaderboard.json",
                    help="the one-replicate leaderboard to compare with (default: this checkout's)")
    ap.add_argument("--out", default="reports/replicates")
    ap.add_argument("--note", default="", help="a line written under the heading (e.g. where and how long it ran)")
    args = ap.parse_args(argv)

    from attendome.core.io import atomic_path
    from attendome.report import _reconstruction, _summary

    if args.exp:
        ref = exp_ref(args.exp)
        text = subprocess.run(["git", "show", f"{ref}:metrics/leaderboard.json"], capture_output=True, text=True,
                              check=True).stdout
        source = f"experiment `{args.exp}` ({ref})"
    else:
        text = Path(args.leaderboard).read_text()
        source = f"`{args.leaderboard}`"
    many = json.loads(text)
    one = json.loads(Path(args.baseline).read_text())
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    n = n_replicates(many)
    lines = [f"## {n} replicates of every predictor (the paper setting)", "",
             f"Read from {source}." + (f" {args.note}" if args.note else ""), ""]
    lines += comparison(one, many)
    body = _summary(many) + _reconstruction(many)
    lines += [x.replace("### ", "### Replicated run: ", 1) if x.startswith("### ") else x for x in body]
    with atomic_path(out / "leaderboard.json") as p:
        Path(p).write_text(text)
    with atomic_path(out / "replicates.md") as p:
        Path(p).write_text("\n".join(lines).rstrip() + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
