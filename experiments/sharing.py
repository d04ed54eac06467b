"""Does sharing pay? Shared capacity, a learning curve and family-out transfer of the universal encoder,
on the outputs of a ``dvc repro`` (issue 16, items 1, 3 and 7).

Three parts, each row one replicate with the pipeline's seed of replicate 0 (so the ``default`` row is
the ``embed`` stage's replicate 0), every choice read on the validation split only:

1. **Shared capacity** (``--variants``): the default universal encoder, then one switch at a time:
   ``shared_rank`` (a bank of R rank-1 bilinear forms shared by every head of every model, each
   head weighting them from its embedding), ``shared_hidden`` (the shared feature network before every
   head, ``embed.shared_hidden``: ``no shared features`` switches it off), ``rank`` (the per-head
   hypernetwork rank), ``dim``. Per model: validation and held-out KL,
   held-out KL / positional, / the per-head cloners' replicate 0 (``data/clone/<model>.parquet``),
   the induction-target mass of the atlas's induction heads on held-out repeat probes, and the
   train-validation gap at the chosen epoch (how much the variant memorises the training prompts).
2. **Learning curve** (``--fractions 0.25 0.5``, off by default): the default and the variant best on
   validation, trained on the first 1/4, 1/2 and all training prompts of every model (validation and
   held-out unchanged); ``experiments/more_data.py`` goes past the default corpus.
3. **Family-out transfer** (``--no-transfer`` skips it): for every family of the run's causal,
   non-control models, train without that family's models, freeze the shared network, fit only their
   embeddings with the per-head update budget of the joint run, and report held-out KL vs the joint
   run and vs the positional baseline, and induction retrieval of the transferred heads: each
   transferred induction head queries the heads of the other models (embeddings centred on the
   non-control heads' mean, cosine), AP against the exact chance of a random ranking.

   ``--transfer-budgets 1 2 4`` fits the embeddings again with 2 and 4 times that budget: if the
   transferred KL then approaches the joint run's, the like-for-like fit (x1) is what limits transfer,
   not the frozen shared network.

   Where transfer loses: every transferred head's held-out KL beside its joint-run KL
   (``transfer_heads.csv``), summed up per model in the report by the atlas's head types and by depth
   (thirds of the layers): the ratio of means and the share of the model's whole excess KL that each
   group carries. ``--families smollm2`` leaves out only the families named (with ``--append`` the rows
   of an earlier run that this one does not redo, other families or other budgets, stay).

    python experiments/sharing.py --transfer-budgets 1 2 4 --out reports/sharing
    python experiments/sharing.py --variants "hypernetwork rank 8" --no-transfer --append --out reports/sharing
    python experiments/sharing.py --variants default --append --out reports/sharing

writes ``variants.csv``, ``curve.csv``, ``transfer.csv``, ``transfer_heads.csv``, ``sharing.md`` and
``sharing.png`` (27 min
on 2 cores with ``--transfer-budgets 1 2 4`` at the defaults of patience 15 and the shared feature
network, measured alone; ``--append`` keeps the rows of the variants a run does not train).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import induction_mass, pin_cpu, take_prompts  # noqa: E402

pin_cpu()

VARIANTS = {
    "default": {},
    "shared bank R=8": {"shared_rank": 8},
    "shared bank R=32": {"shared_rank": 32},
    "shared features 64": {"shared_hidden": 64},
    "no shared features": {"shared_hidden": 0},
    "hypernetwork rank 8": {"rank": 8},
    "dim 8": {"dim": 8},
}


def _cloner_kl(key: str) -> float:
    """Held-out KL of the per-head cloners' replicate 0 (the stage ``clone@<key>``)."""
    import pandas as pd

    c = pd.read_parquet(f"data/clone/{key}.parquet")
    c = c[(c.seed == 0) & (c.method == "model") & (c.kind == "all") & (c.metric == "kl")]
    return float(c.value.mean())


def _gap(res) -> float:
    h = res.history[res.best_epoch]
    return float(h["val_kl"] - h["train_kl"])


def _settings(params, switch: dict):
    """``(embed params, shared-capacity keywords)`` of one variant: ``shared_rank`` / ``shared_hidden``
    go to :func:`~attendome.space.universal.train_universal`, the rest are ``embed`` params."""
    kw = {k: v for k, v in switch.items() if k in ("shared_rank", "shared_hidden")}
    return params.embed.model_copy(update={k: v for k, v in switch.items() if k not in kw}), kw


def _train(models, tp, seed, label, **kw):
    from attendome.space.universal import train_universal

    t0 = time.perf_counter()
    enc, res, counts = train_universal(models, tp, seed, None, progress=False, **kw)
    print(f"[sharing] {label}: val {res.best_val:.4f} (epoch {res.best_epoch}, {time.perf_counter() - t0:.0f} s)",
          flush=True)
    return enc, res, counts


def _retrieval(X, model, family, labels, queries_from: str) -> tuple[float, float, int]:
    """Mean AP of the induction heads of ``queries_from`` against every other model's heads, and chance."""
    import numpy as np

    from attendome.board.metrics import expected_ap, retrieval_queries

    q = retrieval_queries(X, model, family, labels, ks=(10,), scopes=("all",))
    q = q[model[q["query"].to_numpy()] == queries_from]
    if q.empty:
        return np.nan, np.nan, 0
    cand = model != queries_from
    return float(q.ap.mean()), expected_ap(int(cand.sum()), int(labels[cand].sum())), len(q)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--out", default="reports/sharing")
    ap.add_argument("--variants", nargs="*", default=["default", "shared bank R=32", "no shared features"],
                    choices=list(VARIANTS))
    ap.add_argument("--fractions", nargs="*", type=float, default=[],
                    help="learning curve: fractions of the training prompts (e.g. 0.25 0.5; "
                         "experiments/more_data.py goes past the default corpus)")
    ap.add_argument("--no-transfer", action="store_true")
    ap.add_argument("--transfer-budgets", nargs="+", type=float, default=[1.0],
                    help="multiples of the joint run's per-head update budget for the transfer fit (1 = the "
                         "issue's like-for-like budget; more shows whether the fit or the frozen network limits)")
    ap.add_argument("--families", nargs="+", default=None,
                    help="transfer: leave out only these families (default: every causal, non-control family)")
    ap.add_argument("--append", action="store_true",
                    help="keep the rows of variants.csv whose variants this run does not train, their "
                         "/cloner ratio recomputed against the current cloners (data/clone), and the "
                         "transfer rows of the families this run does not leave out")
    ap.add_argument("--report-only", action="store_true", help="rewrite sharing.md and sharing.png from the CSVs")
    args = ap.parse_args(argv)
    if args.report_only:
        return _report_from_csv(Path(args.out))
    if any(b <= 0 for b in args.transfer_budgets):
        raise SystemExit(f"error: --transfer-budgets {args.transfer_budgets}: multiples must be > 0")

    import numpy as np
    import pandas as pd

    from attendome.clone.evaluate import evaluate_heads
    from attendome.clone.losses import mean_kl
    from attendome.clone.positional import mean_positional_pattern
    from attendome.clone.run import head_labels
    from attendome.clone.training import seed_for, torch_threads
    from attendome.core.params import load_params
    from attendome.space.embed import load_model_data
    from attendome.space.universal import fit_new_embeddings

    params = load_params(args.params)
    known = list(dict.fromkeys(params.family(k) for k in params.models if not params.is_control(k)))
    if args.families and set(args.families) - set(known):
        raise SystemExit(f"error: --families {sorted(set(args.families) - set(known))}: not a family of the "
                         f"run's non-control models {known}")
    if args.families and "default" not in args.variants:
        raise SystemExit("error: --families needs the 'default' variant (the joint run transfer is read against)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    seed = seed_for("universal", params.embed.seed, 0)
    pos_labels = params.leaderboard.positive_labels
    rows, curve, transfer, transfer_heads, joint_per = [], [], [], [], {}
    with torch_threads(params.embed.threads):
        models = load_model_data(params, params.embed)
        real = [m for m in models if not params.is_control(m.key)]
        ind = {m.key: head_labels(key=m.key, positive=pos_labels).query("head_type == 'induction'") for m in models}
        positional = {m.key: mean_positional_pattern(m.train) for m in models}
        base = {m.key: evaluate_heads(lambda b: None, m.heldout, m.n, params.embed.batch_prompts,
                                      positional=positional[m.key], methods=("positional",)) for m in models}
        klpos = {k: float(b.query("kind == 'all' and metric == 'kl'").value.mean()) for k, b in base.items()}
        cloner = {m.key: _cloner_kl(m.key) for m in models}
        fits = {}
        for name in args.variants:
            tp, kw = _settings(params, VARIANTS[name])
            enc, res, counts = _train(models, tp, seed, name, **kw)
            fits[name] = (enc, res, counts, tp, kw)
            for m in models:
                per = evaluate_heads(lambda b, k=m.key: enc(k, b), m.heldout, m.n, tp.batch_prompts,
                                     methods=("model",))
                kl = float(per.query("kind == 'all' and metric == 'kl'").value.mean())
                if name == "default":
                    joint_per[m.key] = per
                pm, tm = induction_mass(per, ind[m.key], m.n_heads)
                rows.append(dict(variant=name, settings=json.dumps(VARIANTS[name]), model=m.key,
                                 best_val_kl=res.best_val, best_epoch=res.best_epoch, gap=_gap(res),
                                 val_kl=res.history[res.best_epoch]["val_kl"], heldout_kl=kl,
                                 ratio_positional=kl / klpos[m.key], ratio_cloner=kl / cloner[m.key],
                                 ind_mass=pm, ind_mass_true=tm))
        var = pd.DataFrame(rows)
        if args.append and (out / "variants.csv").exists():  # earlier rows of the variants not rerun
            old = pd.read_csv(out / "variants.csv")
            old = old[~old.variant.isin(args.variants) & old.model.isin(cloner)].copy()
            old["ratio_cloner"] = old.heldout_kl / old.model.map(cloner)  # against this run's cloners
            var = pd.concat([var, old], ignore_index=True)
        var.to_csv(out / "variants.csv", index=False)
        # chosen on validation only, over every variant in the table (with --append, earlier runs' too)
        best = var.groupby("variant", sort=False).best_val_kl.first().idxmin()
        print(f"[sharing] best on validation: {best}", flush=True)

        for name in (dict.fromkeys(["default", best]) if args.fractions else ()):
            if name not in fits:
                continue
            tp, kw = fits[name][3], fits[name][4]
            for frac in sorted(args.fractions) + [1.0]:
                if frac == 1.0:
                    enc, res = fits[name][0], fits[name][1]
                    sub = models
                else:
                    sub = [type(m)(m.key, take_prompts(m.train, max(8, int(round(frac * len(m.train))))), m.val,
                                   m.heldout, m.n_layers, m.n_heads) for m in models]
                    enc, res, _ = _train(sub, tp, seed, f"{name}, {frac:g} of the training prompts", **kw)
                for m in sub:
                    kl = mean_kl(lambda b, k=m.key: enc(k, b), m.heldout, tp.batch_prompts)
                    curve.append(dict(variant=name, fraction=frac, n_train_prompts=len(m.train), model=m.key,
                                      best_val_kl=res.best_val, heldout_kl=kl, ratio_positional=kl / klpos[m.key]))
        lc = pd.DataFrame(curve)
        lc.to_csv(out / "curve.csv", index=False)

        if not args.no_transfer and "default" in fits:
            enc_j, res_j, counts_j, tp, _ = fits["default"]
            families = [f for f in dict.fromkeys(params.family(m.key) for m in real if m.train.causal)
                        if not args.families or f in args.families]
            types = head_labels(key=None, positive=pos_labels).groupby(["model", "layer", "head"]).head_type.agg(
                lambda t: ";".join(sorted(set(t))))
            Xj = {m.key: enc_j.embedding(m.key).numpy() for m in models}
            for fam in families:
                held = [m for m in real if params.family(m.key) == fam]
                rest = [m for m in models if m not in held]
                enc, res, _ = _train(rest, tp, seed_for(f"universal-without-{fam}", tp.seed, 0), f"without {fam}")
                for m, budget in ((m, b) for m in held for b in args.transfer_budgets):
                    emb, fr = fit_new_embeddings(enc, m, tp, seed_for(f"transfer:{m.key}", tp.seed, 0),
                                                 budget * float(np.mean(counts_j[m.key])), progress=False)
                    per = evaluate_heads(lambda b, k=m.key: enc(k, b, emb=emb), m.heldout, m.n, tp.batch_prompts,
                                         methods=("model",))
                    kl = float(per.query("kind == 'all' and metric == 'kl'").value.mean())
                    joint = float(var.query("variant == 'default' and model == @m.key").heldout_kl.iloc[0])
                    aps = {}
                    for tag, X in (("transfer", {**{r.key: enc.embedding(r.key).numpy() for r in rest},
                                                 m.key: emb.numpy()}),
                                   ("joint", Xj)):
                        keys = [r.key for r in rest] + [m.key]
                        Xa = np.concatenate([X[k] for k in keys])
                        mk = np.concatenate([[k] * len(X[k]) for k in keys])
                        ctrl = np.array([params.is_control(k) for k in mk])
                        Xa = Xa - Xa[~ctrl].mean(0)
                        fa = np.array([params.family(k) for k in mk])
                        lab = np.zeros(len(mk), bool)
                        for k in keys:
                            off = np.flatnonzero(mk == k)[0]
                            n_h = next(x.n_heads for x in models if x.key == k)
                            for r in ind[k].itertuples():
                                lab[off + int(r.layer) * n_h + int(r.head)] = True
                        aps[tag] = _retrieval(Xa, mk, fa, lab, m.key)
                    transfer.append(dict(family=fam, model=m.key, budget=budget, heldout_kl=kl,
                                         joint_heldout_kl=joint,
                                         ratio_joint=kl / joint, ratio_positional=kl / klpos[m.key],
                                         best_epoch=fr.best_epoch, induction_ap=aps["transfer"][0],
                                         joint_induction_ap=aps["joint"][0], chance_ap=aps["transfer"][1],
                                         n_queries=aps["transfer"][2]))
                    transfer_heads.append(_head_rows(fam, m, budget, per, joint_per[m.key], types))
                    print(f"[sharing] {m.key} transferred (budget x{budget:g}): KL / joint {kl / joint:.3f} "
                          f"(epoch {fr.best_epoch} of {fr.epochs_run})", flush=True)
        tr = pd.DataFrame(transfer)
        th = pd.concat(transfer_heads, ignore_index=True) if transfer_heads else pd.DataFrame()
        if args.append:  # the transfer rows of the families this run did not leave out
            rerun = families if not args.no_transfer else []
            tr, th = (_keep_other_families(_read_csv(out / f), new, rerun, args.transfer_budgets)
                      for f, new in (("transfer.csv", tr), ("transfer_heads.csv", th)))
        tr.to_csv(out / "transfer.csv", index=False)
        th.to_csv(out / "transfer_heads.csv", index=False)
    _write_report(out, var, lc, tr, klpos, cloner, best, th)
    return 0


def _read_csv(path: Path):
    import pandas as pd

    return pd.read_csv(path) if path.exists() and path.stat().st_size > 1 else pd.DataFrame()


def _keep_other_families(old, new, rerun, budgets=()):
    """``new`` plus the rows of ``old`` that this run did not redo: those of a family not in ``rerun``, or
    of a fit budget not in ``budgets`` (an earlier run's x2 / x4 rows stay when this one fits x1 only)."""
    import pandas as pd

    if old.empty:
        return new
    redone = old.family.isin(rerun)
    if "budget" in old.columns:
        redone &= old.budget.isin(budgets)
    out = pd.concat([old[~redone], new], ignore_index=True)
    if "budget" in out.columns:  # each family's rows together (first-seen order), budgets ascending
        rank = {f: i for i, f in enumerate(dict.fromkeys(out.family))}
        out = out.assign(_f=out.family.map(rank)).sort_values(["_f", "budget"], kind="stable").drop(columns="_f")
    return out.reset_index(drop=True)


def _head_rows(fam: str, m, budget: float, per, joint, types):
    """One row per head of a transferred model: its held-out KL transferred and in the joint run, and its
    atlas types (``;``-joined; empty: none of the types)."""
    import pandas as pd

    def kl(p):
        return p.query("kind == 'all' and metric == 'kl'").set_index("head_index").value.sort_index()

    t, j = kl(per), kl(joint)
    d = pd.DataFrame({"head_index": t.index, "kl_transfer": t.to_numpy(), "kl_joint": j.loc[t.index].to_numpy()})
    d.insert(0, "family", fam)
    d.insert(1, "model", m.key)
    d.insert(2, "budget", budget)
    d.insert(3, "layer", d.head_index // m.n_heads)
    d.insert(4, "head", d.head_index % m.n_heads)
    d.insert(5, "n_layers", m.n_layers)
    d["types"] = [types.get((m.key, int(r.layer), int(r.head)), "") for r in d.itertuples()]
    return d.drop(columns="head_index")


def transfer_breakdown(th):
    """Where a transferred model loses, per model at budget x1: heads grouped by atlas type (a head of two
    types counts in both; ``no type``: none of them) and by thirds of the layers.

    Returns:
        ``model, group, n_heads, kl_joint, kl_transfer, ratio, excess_share``: mean held-out KL of the
        group's heads in the joint run and transferred, their ratio (> 1: transfer is worse), and the
        share of the model's whole excess KL (sum of transferred - joint over all its heads) that the
        group carries (the type groups overlap, so their shares need not sum to 1; the thirds do).
    """
    import numpy as np
    import pandas as pd

    rows = []
    for model, d in th[th.budget == 1.0].groupby("model", sort=False):
        excess = float((d.kl_transfer - d.kl_joint).sum())
        third = np.minimum(3 * d.layer.to_numpy() // d.n_layers.to_numpy(), 2)
        types = d.types.fillna("").astype(str)
        groups = [(t, types.str.split(";").apply(lambda s, t=t: t in s).to_numpy())
                  for t in sorted({x for s in types for x in s.split(";") if x})]
        groups.append(("no type", (types == "").to_numpy()))
        groups += [(f"layers {n} third", third == i) for i, n in enumerate(("1st", "2nd", "3rd"))]
        for name, sel in groups:
            g = d[sel]
            if g.empty:
                continue
            rows.append(dict(model=model, group=name, n_heads=len(g), kl_joint=float(g.kl_joint.mean()),
                             kl_transfer=float(g.kl_transfer.mean()),
                             ratio=float(g.kl_transfer.mean() / g.kl_joint.mean()),
                             excess_share=float((g.kl_transfer - g.kl_joint).sum() / excess) if excess else np.nan))
    return pd.DataFrame(rows)


def _report_from_csv(out: Path) -> int:
    """The report of an earlier run, from its CSVs (the baselines are recovered from the ratios)."""
    import pandas as pd

    var = pd.read_csv(out / "variants.csv")
    lc = pd.read_csv(out / "curve.csv") if (out / "curve.csv").stat().st_size > 1 else pd.DataFrame()
    tr = pd.read_csv(out / "transfer.csv") if (out / "transfer.csv").stat().st_size > 1 else pd.DataFrame()
    th = _read_csv(out / "transfer_heads.csv")
    first = var.drop_duplicates("model").set_index("model")
    klpos = (first.heldout_kl / first.ratio_positional).to_dict()
    cloner = (first.heldout_kl / first.ratio_cloner).to_dict()
    best = var.groupby("variant", sort=False).best_val_kl.first().idxmin()
    _write_report(out, var, lc, tr, klpos, cloner, best, th)
    return 0


def _write_report(out: Path, var, lc, tr, klpos, cloner, best, th=None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines = ["## Shared capacity (one replicate each; chosen on validation)", "",
             "| variant | val KL (all models) | gap val-train | "
             + " | ".join(f"{m} KL/pos · /cloner · ind. mass" for m in var.model.unique()) + " |",
             "|---|---|---|" + "---|" * var.model.nunique()]
    for name, g in var.groupby("variant", sort=False):
        g = g.set_index("model")
        cells = [f"{r.ratio_positional:.3f} · {r.ratio_cloner:.3f} · {r.ind_mass:.2f}" for r in g.itertuples()]
        mark = " (best on validation)" if name == best else ""
        lines.append(f"| {name}{mark} | {g.best_val_kl.iloc[0]:.4f} | {g.gap.iloc[0]:.3f} | "
                     + " | ".join(cells) + " |")
    true = var.drop_duplicates("model").set_index("model").ind_mass_true
    lines += ["", "Positional held-out KL: " + ", ".join(f"{k} {v:.4f}" for k, v in klpos.items())
              + ". Cloner (replicate 0) held-out KL: " + ", ".join(f"{k} {v:.4f}" for k, v in cloner.items())
              + ". True induction mass: " + ", ".join(f"{k} {v:.2f}" for k, v in true.items() if v == v) + ".", ""]
    if not lc.empty:
        lines += ["## Learning curve (held-out KL / positional)", "",
                  "| variant | training prompts | " + " | ".join(lc.model.unique()) + " | val KL |",
                  "|---|---|" + "---|" * lc.model.nunique() + "---|"]
        for (name, n), g in lc.groupby(["variant", "fraction"], sort=False):
            lines.append(f"| {name} | {g.n_train_prompts.iloc[0]} | "
                         + " | ".join(f"{x:.3f}" for x in g.ratio_positional) + f" | {g.best_val_kl.iloc[0]:.4f} |")
        lines.append("")
    if not tr.empty:
        lines += ["## Family-out transfer (shared network frozen, only the left-out family's embeddings fitted)", "",
                  "| family left out | model | fit budget | KL / joint | KL / positional | induction AP transfer "
                  "| joint | chance | queries |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for r in tr.itertuples():
            b = getattr(r, "budget", 1.0)
            lines.append(f"| {r.family} | {r.model} | x{b:g}{' (like for like)' if b == 1 else ''} | "
                         f"{r.ratio_joint:.3f} | {r.ratio_positional:.3f} | "
                         f"{r.induction_ap:.3f} | {r.joint_induction_ap:.3f} | {r.chance_ap:.3f} | {r.n_queries} |")
        lines += ["", "KL / joint: held-out KL of the left-out model's heads, embeddings fitted on its training "
                  "prompts with the shared network frozen, over the joint run's (lower is better; the target is "
                  "within 5 %). Fit budget: multiples of the mean per-head updates the model's heads got in the "
                  "joint run (x1 is the like-for-like transfer; larger budgets show whether the fit or the frozen "
                  "network limits it); the epoch within each fit is chosen on the model's validation prompts. "
                  "Induction AP: each transferred induction head queries the other models' heads (cosine, "
                  "centred embeddings) against the exact chance of a random ranking.", ""]
    if th is not None and not th.empty:
        bd = transfer_breakdown(th)
        lines += ["## Where transfer loses (budget x1, per head group)", "",
                  "| model | heads | n | KL joint | KL transferred | ratio | share of the excess |",
                  "|---|---|---|---|---|---|---|"]
        lines += [f"| {r.model} | {r.group} | {r.n_heads} | {r.kl_joint:.4f} | {r.kl_transfer:.4f} | "
                  f"{r.ratio:.3f} | {r.excess_share:.0%} |" for r in bd.itertuples()]
        lines += ["", "Heads grouped by the atlas's types (labels high / medium; a head of two types counts in "
                  "both; `no type`: none) and by thirds of the layers. Ratio: mean transferred held-out KL over "
                  "the joint run's (ratio of means, as in KL / joint above). Share of the excess: the group's "
                  "part of the model's summed excess KL (transferred - joint); a group that carries more than "
                  "its share of heads is where the frozen shared network fits the left-out family worst.", ""]
    (out / "sharing.md").write_text("\n".join(lines))
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    ax = axes[0]
    real = [m for m in var.model.unique() if m in cloner and not m.endswith("-random")]
    for i, (name, g) in enumerate(var.groupby("variant", sort=False)):
        g = g.set_index("model").loc[real]
        ax.scatter(range(len(real)), g.ratio_positional, label=name, marker="os^vDP"[i % 6])
    ax.axhline(1.0, color="grey", lw=0.8)
    ax.set_xticks(range(len(real)), real, rotation=20, fontsize=7)
    ax.set_ylabel("held-out KL / positional (lower = better)")
    ax.set_title("shared capacity variants")
    ax.legend(fontsize=6)
    ax = axes[1]
    if not lc.empty:
        for (name, m), g in lc.groupby(["variant", "model"], sort=False):
            if m in real:
                ax.plot(g.n_train_prompts, g.ratio_positional, "o-" if name == "default" else "s--",
                        label=f"{name}: {m}")
        ax.set_xscale("log")
        ax.set_xlabel("training prompts")
        ax.set_ylabel("held-out KL / positional")
        ax.set_title("universal encoder learning curve")
        ax.legend(fontsize=6)
    elif not tr.empty:
        ax.bar(range(len(tr)), tr.ratio_joint, color="#0072B2")
        ax.axhline(1.0, color="grey", lw=0.8)
        ax.axhline(1.05, color="#D55E00", lw=0.8, ls="--", label="target: within 5 % of joint")
        ax.set_xticks(range(len(tr)), [f"{r.family} out\nbudget x{getattr(r, 'budget', 1.0):g}"
                                       for r in tr.itertuples()], fontsize=6, rotation=30)
        ax.set_ylim(0.9, max(1.1, float(tr.ratio_joint.max()) + 0.02))
        ax.set_ylabel("transferred held-out KL / joint run")
        ax.set_title("family-out transfer (shared network frozen)")
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(out / "sharing.png", dpi=120)
    print("\n".join(lines))


if __name__ == "__main__":
    raise SystemExit(main())
