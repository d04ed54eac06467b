"""Which encoder layer should the predictors read? Encoder features from each hidden-state layer of the
frozen features encoder, the universal encoder trained on each, the layer chosen on validation
(issue 16, item 2: "encoder features from the layer(s) chosen on validation, not only the last").

On the outputs of a ``dvc repro``: for every layer in ``--layers`` (hidden-state index: 0 = the
embeddings, ``n_layers`` = the last, which the pipeline reads by default, ``features.layer: -1``) the
segment features are recomputed exactly as the ``features`` stage does (mean hidden state per
segment), the universal encoder is trained with the ``embed`` stage's settings and the seed of its
replicate 0, and per model the validation KL, held-out KL / positional and the induction-target mass
on held-out repeat probes are reported. The layer is **chosen by the validation KL** summed over every
model; the held-out columns are read only after that choice. One replicate per layer.

    python experiments/layers.py --out reports/layers

writes ``layers.csv``, ``layers.md`` and ``layers.png`` (10.5 minutes and 6.7 GB peak on 2 cores for
three layers of all-mpnet-base-v2 on the default models, measured alone). The pipeline's
``features.layer`` is set to the layer this chooses (6 of 6, 9, 12; commit after 10051d8); the run
that chose it read the previous default's outputs (layer 12, the last), and its layer-12 row equals
the ``embed`` stage's replicate 0 of that run (validation KL 0.3346). Features go to a scratch folder
(``--scratch``, default a temporary directory) whose ``data/`` links every other output of the run.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import ROOT, induction_mass, pin_cpu  # noqa: E402

pin_cpu()


def _scratch_root(scratch: Path) -> Path:
    """A run root whose ``data/`` links every output of the repository's run except the features."""
    (scratch / "data" / "features").mkdir(parents=True, exist_ok=True)
    for entry in (ROOT / "data").iterdir():
        link = scratch / "data" / entry.name
        if entry.name != "features" and not link.exists():
            link.symlink_to(entry)
    return scratch


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--out", default="reports/layers")
    ap.add_argument("--layers", nargs="*", type=int, default=[6, 9, 12],
                    help="hidden-state indices of the features encoder (0 = embeddings; its depth = the last)")
    ap.add_argument("--scratch", default=None, help="folder for the recomputed features (default: a temp dir)")
    ap.add_argument("--append", action="store_true",
                    help="add these layers to the layers.csv already in --out (then rewrite the report)")
    ap.add_argument("--report-only", action="store_true", help="rewrite layers.md and layers.png from layers.csv")
    args = ap.parse_args(argv)
    out = Path(args.out)
    if args.report_only:
        import pandas as pd

        _write_report(out, pd.read_csv(out / "layers.csv"))
        return 0

    import pandas as pd

    from attendome.clone.evaluate import evaluate_heads
    from attendome.clone.positional import mean_positional_pattern
    from attendome.clone.run import head_labels
    from attendome.clone.training import seed_for, torch_threads
    from attendome.core.io import read_parquet, save_tensors
    from attendome.core.params import load_params
    from attendome.prep.inputs import load_encoder
    from attendome.space.embed import load_model_data
    from attendome.space.universal import train_universal

    params = load_params(args.params)
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(args.scratch) if args.scratch else Path(tempfile.mkdtemp(prefix="attendome-layers-"))
    root = _scratch_root(tmp)
    tp = params.embed
    seed = seed_for("universal", tp.seed, 0)
    pos_labels = params.leaderboard.positive_labels
    prompts = read_parquet(ROOT / "data/corpus/prompts.parquet")
    segments = read_parquet(ROOT / "data/corpus/segments.parquet")
    rows = []
    try:
        with torch_threads(tp.threads):
            enc_model = load_encoder(params)
            n_enc = enc_model.n_layers
            layers = [n_enc if layer == -1 else layer for layer in args.layers]
            bad = [layer for layer in layers if not 0 <= layer <= n_enc]
            if bad:
                raise SystemExit(f"error: --layers {bad}: {params.features.encoder} has hidden states 0..{n_enc}")
            klpos = ind = None
            for layer in layers:
                from attendome.prep.segattn import segment_features

                t0 = time.perf_counter()
                feats = segment_features(enc_model, prompts, segments, layer, progress=False)
                save_tensors(feats, root / "data/features/features.safetensors",
                             {"info": json.dumps({"encoder": params.features.encoder, "layer": layer})})
                models = load_model_data(params, tp, str(root))
                if klpos is None:  # the positional baseline does not depend on the features
                    klpos = {}
                    for m in models:
                        b = evaluate_heads(lambda b: None, m.heldout, m.n, tp.batch_prompts,
                                           positional=mean_positional_pattern(m.train), methods=("positional",))
                        klpos[m.key] = float(b.query("kind == 'all' and metric == 'kl'").value.mean())
                    ind = {m.key: head_labels(key=m.key, positive=pos_labels).query("head_type == 'induction'")
                           for m in models}
                enc, res, _ = train_universal(models, tp, seed, None, progress=False)
                h = res.history[res.best_epoch]
                print(f"[layers] layer {layer}: val {res.best_val:.4f} (epoch {res.best_epoch}, "
                      f"{time.perf_counter() - t0:.0f} s)", flush=True)
                for m in models:
                    per = evaluate_heads(lambda b, k=m.key: enc(k, b), m.heldout, m.n, tp.batch_prompts,
                                         methods=("model",))
                    kl = float(per.query("kind == 'all' and metric == 'kl'").value.mean())
                    pm, tm = induction_mass(per, ind[m.key], m.n_heads)
                    rows.append(dict(layer=layer, last=layer == n_enc, model=m.key, control=params.is_control(m.key),
                                     best_val_kl=res.best_val, best_epoch=res.best_epoch,
                                     gap=float(h["val_kl"] - h["train_kl"]), heldout_kl=kl,
                                     ratio_positional=kl / klpos[m.key], ind_mass=pm, ind_mass_true=tm))
            enc_model.release()
    finally:
        if not args.scratch:
            shutil.rmtree(tmp, ignore_errors=True)
    df = pd.DataFrame(rows)
    if args.append and (out / "layers.csv").exists():
        df = pd.concat([pd.read_csv(out / "layers.csv"), df], ignore_index=True).sort_values("layer", kind="stable")
    df.to_csv(out / "layers.csv", index=False)
    _write_report(out, df)
    return 0


def _write_report(out: Path, df) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    per_layer = df.groupby("layer", sort=True).best_val_kl.first()
    chosen = int(per_layer.idxmin())  # on validation only
    models = list(dict.fromkeys(df.model))
    lines = ["## Encoder layer of the features (universal encoder, one replicate per layer; chosen on validation)",
             "", "| layer | val KL (all models) | epoch | " + " | ".join(f"{m} KL/pos · ind. mass" for m in models)
             + " |", "|---|---|---|" + "---|" * len(models)]
    for layer, g in df.groupby("layer", sort=True):
        g = g.set_index("model").loc[models]
        tags = [t for t, on in (("last", bool(g["last"].iloc[0])), ("chosen on validation", layer == chosen)) if on]
        name = f"{layer}" + (f" ({', '.join(tags)})" if tags else "")
        cells = [f"{r.ratio_positional:.3f} · {r.ind_mass:.2f}" for r in g.itertuples()]
        lines.append(f"| {name} | {g.best_val_kl.iloc[0]:.4f} | {int(g.best_epoch.iloc[0])} | " + " | ".join(cells)
                     + " |")
    last = df[df["last"]].best_val_kl
    if len(last):
        delta = per_layer[chosen] / float(last.iloc[0]) - 1
        lines += ["", f"Layer {chosen} is chosen by validation KL ({delta:+.1%} against the last layer); "
                  "`features.layer` in params.yaml reads it. "
                  "KL/pos: held-out KL over the positional baseline (lower is better, 1 = no better than each "
                  "head's positional habit); ind. mass: predicted attention mass on the induction target on "
                  "held-out repeat probes, averaged over the atlas's induction heads (true mass in "
                  "`layers.csv`).", ""]
    (out / "layers.md").write_text("\n".join(lines))
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    axes[0].plot(per_layer.index, per_layer.values, "o-", color="#0072B2")
    axes[0].axvline(chosen, color="#D55E00", ls="--", lw=0.8, label=f"chosen on validation ({chosen})")
    axes[0].set_xlabel("hidden-state layer of the features encoder")
    axes[0].set_ylabel("validation KL, all models (lower = better)")
    axes[0].legend(fontsize=7)
    for m in models:
        g = df[df.model == m].sort_values("layer")
        if not g.control.iloc[0]:
            axes[1].plot(g.layer, g.ratio_positional, "o-", label=m)
    axes[1].axhline(1.0, color="grey", lw=0.8)
    axes[1].set_xlabel("hidden-state layer")
    axes[1].set_ylabel("held-out KL / positional")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "layers.png", dpi=120)
    print("\n".join(lines))


if __name__ == "__main__":
    raise SystemExit(main())
