"""Unit tier: training gives the same bytes in two processes with different thread counts (the fixed
thread count of the training params, :func:`attendome.clone.training.torch_threads`, and the CPU kernels
that dvc.yaml pins for the training stages, ``attendome.REPRODUCIBLE_CPU``), and nothing run-dependent
enters its history."""

import json
import subprocess
import sys

from tests.conftest import ROOT

SCRIPT = r"""
import hashlib, json, sys
import torch
torch.set_num_threads(int(sys.argv[1]))
from attendome.clone.data import SegmentData
from attendome.clone.model import train_cloner
from attendome.clone.training import torch_threads
from attendome.core.params import TrainParams
from tests.unit.test_phase1 import synthetic_data
with torch_threads(2):  # as run_clone / run_embed do around a whole stage: data, training, evaluation
    d = synthetic_data(48, 12, d=48)
    train = SegmentData(d.prompt_ids[:36], d.Z[:36], d.A[:36], True)
    val = SegmentData(d.prompt_ids[36:], d.Z[36:], d.A[36:], True)
    model, res = train_cloner(train, val, TrainParams(rank=4, epochs=3, position_dims=0, patience=9), 12, seed=3,
                              progress=False)
blob = b"".join(p.detach().numpy().tobytes() for p in model.parameters())
print(json.dumps({"threads": torch.get_num_threads(), "sha": hashlib.sha256(blob).hexdigest(),
                  "history": res.history}))
"""


def _run(threads: int) -> dict:
    import os

    from attendome import REPRODUCIBLE_CPU

    env = dict(os.environ, **REPRODUCIBLE_CPU)  # as dvc.yaml runs the training stages
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(threads)], cwd=ROOT, capture_output=True, text=True,
                         check=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_training_is_bit_identical_across_thread_counts():
    # two processes set up for 1 and 3 threads (a small laptop, a bigger server) train on the fixed
    # count of the params and write the same bytes; their own setting is restored afterwards
    one, two = _run(1), _run(3)
    assert (one["threads"], two["threads"]) == (1, 3)
    assert one["sha"] == two["sha"], "trained weights differ between processes with 1 and 3 threads"
    assert one["history"] == two["history"]
    assert set(one["history"][0]) == {"epoch", "train_kl", "val_kl", "lr", "grad_norm"}  # no wall-clock
