"""The GPU path, measured without weight files: random-init models of real shapes in bfloat16.

For each shape it times
  1. the seed's induction probe through Attendome's scorer (eager attention, per-layer hooks that
     reduce each layer's probabilities at once) on ``--samples`` x (2 * 50 + 1) tokens,
  2. a plain sdpa forward of the transformer body over the same tokens (no probabilities), and
  3. teacher-forced retrieval on one needle-in-a-haystack trial of 8k and 32k tokens with the
     memory-efficient implementation (sdpa prefill, probabilities for the scored rows only),
and reports seconds, the probe/forward ratio (target: within 1.2x) and peak device memory.

    python experiments/gpu_bench.py --device cuda --out reports/gpu_bench.json
    python experiments/gpu_bench.py --smoke            # tiny shapes on the CPU: checks the script runs

Expected output (one JSON object per shape): ``{"shape", "params_b", "probe_seconds",
"forward_seconds", "ratio", "probe_peak_gb", "retrieval": {"8192": {"seconds", "peak_gb"}, ...}}``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SHAPES = {
    # Qwen2.5-0.5B (Qwen2): the shape of the bundled Qwen2.5-Coder-0.5B
    "qwen2.5-0.5b": dict(arch="qwen2", hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                         num_attention_heads=14, num_key_value_heads=2, vocab_size=151936,
                         max_position_embeddings=32768, rope_theta=1_000_000.0, tie_word_embeddings=True),
    # Llama-3.1-8B
    "llama-3.1-8b": dict(arch="llama", hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                         num_attention_heads=32, num_key_value_heads=8, vocab_size=128256,
                         max_position_embeddings=131072, rope_theta=500_000.0,
                         rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                       "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}),
    # a tiny shape for --smoke
    "tiny": dict(arch="llama", hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=1000, max_position_embeddings=2048, rope_theta=10000.0),
}


def build(shape: str, device: str, dtype):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    spec = dict(SHAPES[shape])
    arch = spec.pop("arch")
    cfg = (Qwen2Config if arch == "qwen2" else LlamaConfig)(**spec)
    cfg._attn_implementation = "eager"
    torch.manual_seed(0)
    with torch.device(device):
        model = (Qwen2ForCausalLM if arch == "qwen2" else LlamaForCausalLM)(cfg).to(dtype).eval()
    return model


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _peak_gb(device: str) -> float | None:
    import torch

    return round(torch.cuda.max_memory_allocated() / 2**30, 2) if device.startswith("cuda") else None


def bench(shape: str, device: str, samples: int, batch: int, lengths: list[int]) -> dict:
    import torch

    from attendome.atlas.probes import ProbeLayout, RepeatedTokenProbe
    from attendome.atlas.retrieval import Trial, teacher_forced_hits
    from attendome.atlas.score import run_pattern_scorers
    from attendome.core.capture import base_model
    from attendome.core.models import LoadedModel

    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    model = build(shape, device, dtype)
    cfg = model.config
    lm = LoadedModel(key=shape, model=model, tokenizer=None, is_causal=True, has_unembedding=True,
                     n_layers=cfg.num_hidden_layers, n_heads=cfg.num_attention_heads,
                     n_kv_heads=cfg.num_key_value_heads, d_head=cfg.hidden_size // cfg.num_attention_heads,
                     name=shape)
    g = torch.Generator().manual_seed(0)
    L = 50
    half = torch.randint(cfg.vocab_size // 4, 3 * cfg.vocab_size // 4, (samples, L), generator=g)
    tokens = torch.cat([torch.ones(samples, 1, dtype=torch.long), half, half], 1)  # (N, 101)
    probe = RepeatedTokenProbe(tokens=tokens, layout=ProbeLayout(seq_len=L, offset=1, total_len=tokens.shape[1]),
                               prefix=(1,), suffix=())
    body = base_model(model)
    out = {"shape": shape, "device": device, "dtype": str(dtype).replace("torch.", ""),
           "params_b": round(sum(p.numel() for p in model.parameters()) / 1e9, 3), "samples": samples,
           "batch": batch, "tokens": int(tokens.numel())}
    run_pattern_scorers(lm, RepeatedTokenProbe(tokens[:batch], probe.layout, (1,), ()), ["induction"], batch,
                        progress=False)  # warm-up
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    _sync(device)
    t0 = time.perf_counter()
    run_pattern_scorers(lm, probe, ["induction", "previous_token", "duplicate_token"], batch, progress=False)
    _sync(device)
    out["probe_seconds"] = round(time.perf_counter() - t0, 3)
    out["probe_peak_gb"] = _peak_gb(device)
    model.set_attn_implementation("sdpa")
    with torch.no_grad():
        body(input_ids=tokens[:batch].to(device))  # warm-up
        _sync(device)
        t0 = time.perf_counter()
        for s in range(0, samples, batch):
            x = tokens[s:s + batch].to(device)
            body(input_ids=x, attention_mask=torch.ones_like(x), use_cache=False)
        _sync(device)
    out["forward_seconds"] = round(time.perf_counter() - t0, 3)
    out["ratio"] = round(out["probe_seconds"] / out["forward_seconds"], 3)
    model.set_attn_implementation("eager")
    out["retrieval"] = {}
    for n in lengths:
        if n + 16 > cfg.max_position_embeddings:
            continue
        hay = torch.randint(cfg.vocab_size // 4, 3 * cfg.vocab_size // 4, (n,), generator=g)
        phrase = torch.randint(10, 1000, (6,), generator=g)
        prompt = torch.cat([hay[: n // 2], phrase, hay[n // 2:], torch.tensor([2])])
        trial = Trial(prompt=prompt, answer=phrase, span=(n // 2, n // 2 + 6), words=("x",), context_length=n,
                      depth=0.5)
        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        _sync(device)
        t0 = time.perf_counter()
        teacher_forced_hits(lm, trial, memory_efficient=True)
        _sync(device)
        out["retrieval"][str(n)] = {"seconds": round(time.perf_counter() - t0, 3), "peak_gb": _peak_gb(device)}
    del model
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", nargs="+", default=["qwen2.5-0.5b", "llama-3.1-8b"], choices=sorted(SHAPES))
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--samples", type=int, default=2048)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lengths", nargs="+", type=int, default=[8192, 32768])
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    ap.add_argument("--smoke", action="store_true", help="tiny shape, few samples, on the CPU")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    if args.smoke:
        args.shapes, args.device, args.samples, args.batch, args.lengths = ["tiny"], "cpu", 32, 16, [256]
    results = []
    for shape in args.shapes:
        r = bench(shape, args.device, args.samples, args.batch, args.lengths)
        print(json.dumps(r), flush=True)
        results.append(r)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
