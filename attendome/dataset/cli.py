"""Seed CLI: build the induction-heads classification dataset for several models.

Same flags as the seed README. ``--models`` takes keys of ``params.yaml`` (the offline bundled
models, default: every causal model there) or Hugging Face ids / local paths for online users.
Output formats: ``json`` and ``parquet``. Pickle is not offered: loading a pickle executes
arbitrary code, and a dataset meant to be shared must be safe to open.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from attendome.dataset.classifier import InductionHeadClassifier
from attendome.dataset.loader import ModelLoader
from attendome.core.io import write_json, write_parquet
from attendome.core.params import ParamsError, find_params, load_params
from attendome.core.errors import EXPECTED_ERRORS

__all__ = ["main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    # prog: the name it was started by (attendome-build-induction, build_induction_dataset.py)
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--models",
        nargs="+",
        default=None,
        help="params.yaml catalog keys, local paths or Hugging Face ids "
        "(default: the models params.yaml runs, controls excepted)",
    )
    ap.add_argument("--num-samples", type=int, default=64, help="random sequences (seed/GPU: 2048)")
    ap.add_argument("--seq-len", type=int, default=50)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--high-threshold", type=float, default=0.7)
    ap.add_argument("--medium-threshold", type=float, default=0.35)
    ap.add_argument("--print-reports", action="store_true", help="print a report per model")
    ap.add_argument("--save-individual", action="store_true", help="also save one file per model")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--format", choices=["json", "parquet"], default="json")
    ap.add_argument("--output-dir", default="results/induction_heads")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--params",
        default=None,
        help="where model keys are defined (default: ./params.yaml, else the packaged defaults)",
    )
    return ap


def _report(res: dict, top: int = 10) -> str:
    s = res["induction_scores"]
    lines = [f"== {res['model_name']}: {res['num_layers']} layers x {res['num_heads']} heads =="]
    if np.isnan(s).all():
        return "\n".join(lines + ["  induction undefined (bidirectional encoder)"])
    ch = res["classified_heads"]
    lines.append(f"  high: {len(ch['high'])}  medium: {len(ch['medium'])}  low: {len(ch['low'])}")
    pct = np.nanpercentile(s, [50, 90, 99])
    lines.append(f"  score percentiles p50/p90/p99: {pct[0]:.3f} / {pct[1]:.3f} / {pct[2]:.3f}")
    for h in (ch["high"] + ch["medium"] + ch["low"])[:top]:
        lines.append(f"  L{h['layer']:>2} H{h['head']:>2}  {h['score']:.3f}")
    return "\n".join(lines)


def _jsonable(res: dict) -> dict:
    return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in res.items()}


def _long(res: dict) -> pd.DataFrame:
    s, se = res["induction_scores"], res["induction_stderr"]
    rows = []
    for layer in range(s.shape[0]):
        for head in range(s.shape[1]):
            v = s[layer, head]
            label = (
                "n/a"
                if np.isnan(v)
                else "high"
                if v >= res["config"]["high_threshold"]
                else "medium"
                if v >= res["config"]["medium_threshold"]
                else "low"
            )
            rows.append(
                dict(
                    model=res["model_name"],
                    layer=layer,
                    head=head,
                    score_name="induction",
                    value=float(v),
                    stderr=float(se[layer, head]),
                    label=label,
                    settings=json.dumps(res["config"], sort_keys=True),
                )
            )
    return pd.DataFrame(rows)


def _save(obj, path: Path, fmt: str) -> Path:
    """Write ``obj`` to ``<path>.<fmt>`` (the suffix is appended, never substituted: model names such
    as ``enc-v1.5-a`` keep their dots)."""
    target = path.parent / f"{path.name}.{fmt}"
    if fmt == "json":
        write_json(obj, target)
    else:
        write_parquet(obj, target)
    return target


def file_stem(name: str, taken: set[str]) -> str:
    """A file name for a model name: ``/`` becomes ``--``; a clash with an earlier model gets ``-2``, ...."""
    stem = name.replace("/", "--").replace("\\", "--")
    out, i = stem, 2
    while out in taken:
        out, i = f"{stem}-{i}", i + 1
    taken.add(out)
    return out


def check_args(args) -> str:
    """What is wrong with the flags ('' when nothing): the same rules as params.yaml (counts >= 1,
    ``seq_len >= 2``, non-negative seed, finite thresholds in the induction score's range [0, 1] with
    medium <= high)."""
    import math

    for name in ("high_threshold", "medium_threshold"):
        v = getattr(args, name)
        if not math.isfinite(v) or not 0.0 <= v <= 1.0:
            return f"--{name.replace('_', '-')} {v}: the induction score lies in [0, 1]"
    if args.medium_threshold > args.high_threshold:
        return "--medium-threshold must not exceed --high-threshold"
    if args.num_samples < 1 or args.batch_size < 1 or args.seq_len < 2:
        return "--num-samples/--batch-size must be >= 1 and --seq-len >= 2"
    if args.seed < 0:
        return "--seed must be >= 0"
    return ""


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    problem = check_args(args)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    try:
        models = args.models
        if models is None:
            params = load_params(find_params(args.params)[0])
            # every model the pipeline runs except the random-init controls (encoders are reported as
            # "induction undefined")
            models = [k for k in params.models if not params.is_control(k)]
        loader = ModelLoader(device=args.device, params_path=args.params)
    except ParamsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    clf = InductionHeadClassifier(device=args.device, seed=args.seed)
    out = Path(args.output_dir)
    results, failed, stems = [], [], set()
    for name in models:
        try:
            model, tok = loader.load_model(name)
            res = clf.analyze_model(
                model,
                tok,
                name,
                num_of_samples=args.num_samples,
                seq_len=args.seq_len,
                batch_size=args.batch_size,
                high_threshold=args.high_threshold,
                medium_threshold=args.medium_threshold,
            )
        except EXPECTED_ERRORS + (OSError, ValueError) as err:  # say why, keep going with the other models
            print(f"error: {name!r}: {err}", file=sys.stderr)
            failed.append(name)
            continue
        finally:
            loader.unload_model(name)
        results.append(res)
        if args.print_reports:
            print(_report(res))
        if args.save_individual:
            stem = file_stem(name, stems)
            path = _save(_jsonable(res) if args.format == "json" else _long(res), out / f"{stem}_analysis", args.format)
            print(f"wrote {path}")
    if results:
        done = [r["model_name"] for r in results]
        if args.format == "json":
            combined = {
                "metadata": {
                    "models": done,
                    "failed": failed,
                    "num_samples": args.num_samples,
                    "seq_len": args.seq_len,
                    "high_threshold": args.high_threshold,
                    "medium_threshold": args.medium_threshold,
                    "seed": args.seed,
                    "score_definition": "mean A[i, i-L+1] over second-copy queries",
                },
                "results": [_jsonable(r) for r in results],
            }
        else:
            combined = pd.concat([_long(r) for r in results], ignore_index=True)
        print(f"wrote {_save(combined, out / 'induction_heads_dataset', args.format)}")
    if failed:
        print(f"error: {len(failed)} of {len(models)} model(s) failed: {failed}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
