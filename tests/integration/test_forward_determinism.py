"""Integration tier: a forward pass of a real model gives the same bytes in processes whose machines
differ in their default thread count, because the stage settings decide (``runtime.threads`` applied
by :func:`attendome.stage.set_threads`, the CPU code paths of ``attendome.REPRODUCIBLE_CPU`` set in
``dvc.yaml``). Measured on the project's machines: 5 threads instead of 2 change
``data/attention`` in the last bits, and so does torch's default kernel choice on an AVX-512 machine."""

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.integration

SCRIPT = r"""
import hashlib, json, re, sys
import pandas as pd
import torch
torch.set_num_threads(int(sys.argv[1]))  # the machine's default
from attendome.core.models import load_model
from attendome.core.params import load_params
from attendome.core.text import pydoc_documents
from attendome.prep.segattn import segment_attention
from attendome.stage import set_threads
params = load_params("params.yaml")
set_threads(params.runtime.threads)  # what every stage does first (stage_args)
prompts, segs = [], []
for i, (doc, text) in enumerate(pydoc_documents()[:12]):
    words = list(re.finditer(r"\S+", text))[:40]
    body = text[: words[-1].end()]
    prompts.append({"prompt_id": f"p{i}", "text": body})
    segs += [{"prompt_id": f"p{i}", "seg": j, "char_start": m.start(), "char_end": m.end(), "text": m.group()}
             for j, m in enumerate(words)]
lm = load_model("smollm2-135m", params)
maps = segment_attention(lm, pd.DataFrame(prompts), pd.DataFrame(segs), progress=False,
                         batch=params.runtime.attention_batch)
blob = b"".join(maps[k].numpy().tobytes() for k in sorted(maps))
print(json.dumps({"threads": torch.get_num_threads(), "sha": hashlib.sha256(blob).hexdigest()}))
"""


def _run(machine_threads: int) -> dict:
    from attendome import REPRODUCIBLE_CPU

    env = dict(os.environ, **REPRODUCIBLE_CPU)  # as dvc.yaml runs the stage
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(machine_threads)], cwd=ROOT, capture_output=True,
                         text=True, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_forward_pass_bytes_do_not_follow_the_machines_thread_count():
    one, five = _run(1), _run(5)
    assert one["threads"] == five["threads"] == 2  # the stage's setting, not the machine's
    assert one["sha"] == five["sha"], "a machine with another default thread count wrote other attention bytes"
