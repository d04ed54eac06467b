"""One training loop for every learned predictor (cloners, the universal encoder, the transfer fit).

Training hygiene, the same for all of them:

* **AdamW** with ``weight_decay`` (decoupled), **gradient clipping** at ``grad_clip`` (global L2
  norm), and a **learning-rate schedule**: linear warm-up over ``warmup_epochs``, then cosine
  decay to ``min_lr_frac * lr`` at ``epochs``.
* **Early stopping on validation data**: after every epoch the caller's ``validate()`` gives the
  mean KL on the ``val`` split (prompts from *training documents* set aside by the corpus stage;
  never the held-out ones). The parameters of the best validation epoch are kept and restored at
  the end; training stops after ``patience`` epochs without a relative improvement of at least
  ``min_delta`` (an epoch that improves by less is still kept if it is the best). The held-out
  split is never looked at here.
* **Seeds per model**: :func:`seed_for` derives an initialisation seed from the model key, the
  run's seed and the replicate index, so no two models (and no two replicates) start from the same
  weights.

* **Weight averaging** (optional, ``ema`` > 0): an exponential moving average of the parameters,
  updated after every optimiser step with decay ``min(ema, (1 + t) / (10 + t))`` at step ``t`` (the
  short warm-up keeps the average from dwelling on the initial weights). Validation, the choice of
  the best epoch and the returned parameters then use the average; the optimiser keeps training the
  raw parameters. It smooths the step-to-step noise of a predictor trained on sampled heads.

Every epoch's train KL, validation KL, learning rate and mean gradient norm are returned (and sent
to MLflow through the caller's tracker), so the curves can be looked at.
"""

from __future__ import annotations

import hashlib
import math
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator

import numpy as np
import torch
from attendome.core.progress import progress as progress_bar

__all__ = ["seed_for", "FitResult", "lr_factor", "fit", "max_rise"]


def seed_for(key: str, seed: int, replicate: int = 0) -> int:
    """A 31-bit seed from a model key, a run seed and a replicate index (stable across machines)."""
    h = hashlib.sha256(f"{key}|{seed}|{replicate}".encode()).digest()
    return int.from_bytes(h[:4], "little") & 0x7FFFFFFF


@contextmanager
def torch_threads(n: int) -> Iterator[int]:
    """Run the block on exactly ``n`` torch CPU threads (restored afterwards).

    Training and evaluation run inside it with the thread count of their params (``clone.threads``,
    ``embed.threads``), never the machine's: torch splits large reductions into one chunk per thread,
    so the summation order, and with it the last bits of every number, follows the thread count.
    With it, a 2-core laptop and a 16-core server write the same bytes.
    """
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield n
    finally:
        torch.set_num_threads(old)


@dataclass
class FitResult:
    """What a training run did.

    Attributes:
        best_epoch: 0-based epoch whose parameters were kept (lowest validation KL).
        best_val: its validation KL.
        epochs_run: epochs trained (< max when stopped early).
        history: per epoch ``{epoch, train_kl, val_kl, lr, grad_norm}`` (no wall-clock time: the
            history is written into DVC outputs, which must be the same bytes on every run; the
            seconds per epoch go to MLflow only, as ``epoch_seconds``).
    """

    best_epoch: int
    best_val: float
    epochs_run: int
    max_epochs: int
    history: list[dict] = field(default_factory=list)

    @property
    def stopped_early(self) -> bool:
        return self.epochs_run < self.max_epochs

    @property
    def max_val_rise(self) -> float:
        """Largest rise of validation KL above its running minimum, relative (0.05 = 5 %): a spike
        detector for the curve (a diverging run shows values of 1 and more)."""
        return max_rise([h["val_kl"] for h in self.history])


def max_rise(values: list[float]) -> float:
    """``max_t values[t] / min(values[:t]) - 1`` (0 when the curve never rises)."""
    best, worst = float("inf"), 0.0
    for v in values:
        if best < float("inf"):
            worst = max(worst, v / best - 1)
        best = min(best, v)
    return worst


def lr_factor(step: int, total: int, warmup: int, min_frac: float) -> float:
    """Multiplier of the base learning rate at ``step`` (linear warm-up, then cosine to ``min_frac``)."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    t = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_frac + (1 - min_frac) * 0.5 * (1 + math.cos(math.pi * t))


def fit(params: list[torch.nn.Parameter], epoch_steps: Callable[[np.random.Generator], Iterable[Callable[[], tuple]]],
        steps_per_epoch: int, validate: Callable[[], float], tp, rng: np.random.Generator,
        tracker=None, desc: str = "train", progress: bool = True, log_prefix: str = "",
        ema: float | None = None) -> FitResult:
    """Train ``params`` with the hygiene of the module docstring.

    Args:
        params: the parameters to optimise (everything else stays as it is).
        epoch_steps: ``rng -> iterable of closures``; each closure computes one batch and returns
            ``(loss, kl_sum, n_rows)`` (loss with graph; the KL sum and row count for the running
            train KL).
        steps_per_epoch: number of closures per epoch (for the schedule).
        validate: mean KL on the validation split with the current parameters.
        tp: training params (``epochs, lr, weight_decay, grad_clip, warmup_epochs, min_lr_frac,
            patience, min_delta, ema``).
        rng: numpy generator of the batch order.
        tracker: optional :class:`~attendome.core.tracking.Tracker`.
        log_prefix: prefix of the MLflow metric names (e.g. ``transfer.``).
        ema: decay of the moving average of the parameters that is validated and kept (0: off, the
            raw parameters; ``None``: ``tp.ema``; see the module docstring). The train KL stays that
            of the raw parameters.

    Returns:
        :class:`FitResult`; ``params`` hold the best validation epoch's values.
    """
    ema = tp.ema if ema is None else ema
    if not 0.0 <= ema < 1.0:
        raise ValueError(f"ema {ema}: the decay of the weight average must be in [0, 1)")
    opt = torch.optim.AdamW(params, lr=tp.lr, weight_decay=tp.weight_decay)
    total = tp.epochs * steps_per_epoch
    warm = int(round(tp.warmup_epochs * steps_per_epoch))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, total, warm, tp.min_lr_frac))
    best = (math.inf, -1, [p.detach().clone() for p in params])
    history: list[dict] = []
    bad = 0
    avg = [p.detach().clone() for p in params] if ema else None  # the moving average of the parameters
    n_steps = 0
    bar = progress_bar(range(tp.epochs), desc, enabled=progress, unit="epoch")
    for epoch in bar:
        t0 = time.perf_counter()
        kl_sum, n_rows, norms = 0.0, 0, []
        lr = opt.param_groups[0]["lr"]
        for step in epoch_steps(rng):
            loss, s, n = step()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            norms.append(float(torch.nn.utils.clip_grad_norm_(params, tp.grad_clip)))
            opt.step()
            sched.step()
            if avg is not None:
                decay = min(ema, (1 + n_steps) / (10 + n_steps))
                with torch.no_grad():
                    for a, p in zip(avg, params):
                        a.lerp_(p.detach(), 1 - decay)
            n_steps += 1
            kl_sum, n_rows = kl_sum + s, n_rows + n
        if avg is not None:  # validate (and keep) the average; training goes on from the raw values
            raw = [p.detach().clone() for p in params]
            with torch.no_grad():
                for p, a in zip(params, avg):
                    p.copy_(a)
        val = float(validate())
        rec = {"epoch": epoch, "train_kl": kl_sum / max(n_rows, 1), "val_kl": val, "lr": lr,
               "grad_norm": float(np.mean(norms)) if norms else 0.0}
        history.append(rec)
        if tracker is not None:
            logged = {k: v for k, v in rec.items() if k != "epoch"} | {"epoch_seconds": time.perf_counter() - t0}
            tracker.log_metrics({f"{log_prefix}{k}": v for k, v in logged.items()}, step=epoch)
        bar.set_postfix(val_kl=f"{val:.4f}")
        if val < best[0]:
            improved = val < best[0] * (1 - tp.min_delta)  # enough to reset the patience
            best = (val, epoch, [p.detach().clone() for p in params])
            bad = 0 if improved else bad + 1
        else:
            bad += 1
        if avg is not None:
            with torch.no_grad():
                for p, r in zip(params, raw):
                    p.copy_(r)
        if bad >= tp.patience:
            break
    with torch.no_grad():
        for p, b in zip(params, best[2]):
            p.copy_(b)
    return FitResult(best_epoch=best[1], best_val=best[0], epochs_run=len(history), max_epochs=tp.epochs,
                     history=history)
