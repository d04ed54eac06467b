"""A tiny GPT-2 with hand-set weights: layer 0 head 0 is a previous-token head, layer 1 head 0 an
induction head (K-composition through layer 0's output), every other head attends uniformly.

Residual layout (d_model = 2V + 4F + 2V), every feature written as a +/- pair so the residual has
zero mean and LayerNorm is an exact constant rescaling:
  token block   : +e[t], -e[V+t]
  position block: per frequency f, (cos, sin, -cos, -sin)(theta_f * p)
  prev-token blk: written by layer 0 head 0: +e[t_{i-1}], -e[V+t_{i-1}]
"""

from __future__ import annotations

import math

import numpy as np
import torch

V = 40  # vocabulary (id 0 = <bos>)
F = 12  # position frequencies
N_POS = 64
THETAS = np.linspace(0.35, 3.0, F)


def _tokenizer():
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace
    from transformers import PreTrainedTokenizerFast

    vocab = {"<bos>": 0, **{f"w{i}": i for i in range(1, V)}}
    tk = Tokenizer(WordLevel(vocab, unk_token="<bos>"))
    tk.pre_tokenizer = Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<bos>")


def build_tiny_induction_gpt2(beta: float = 40.0, copy_sign: float = 0.0):
    """Return ``(model, tokenizer)`` of the hand-set two-layer GPT-2 (eager attention).

    ``copy_sign`` != 0 gives the induction head an OV circuit that writes ``copy_sign`` times the
    attended token's own embedding (a copying head for +1, an anti-copying head for -1).
    """
    from transformers import GPT2Config, GPT2LMHeadModel

    P0 = 2 * V
    R0 = P0 + 4 * F
    d = R0 + 2 * V
    n_head = 2
    hd = d // n_head
    cfg = GPT2Config(vocab_size=V, n_positions=N_POS, n_embd=d, n_layer=2, n_head=n_head,
                     bos_token_id=0, eos_token_id=0, attn_implementation="eager",
                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    model = GPT2LMHeadModel(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        for blk in model.transformer.h:
            blk.ln_1.weight.fill_(1.0)
            blk.ln_2.weight.fill_(1.0)
        model.transformer.ln_f.weight.fill_(1.0)
        wte = model.transformer.wte.weight  # (V, d)
        for t in range(V):
            wte[t, t], wte[t, V + t] = 1.0, -1.0
        wpe = model.transformer.wpe.weight  # (N_POS, d)
        for p in range(N_POS):
            for f, th in enumerate(THETAS):
                c, s = math.cos(th * p), math.sin(th * p)
                wpe[p, P0 + 4 * f: P0 + 4 * f + 4] = torch.tensor([c, s, -c, -s])
        s0 = 1.0 / math.sqrt((2 + 2 * F) / d)  # LayerNorm gain on layer-0 input
        s1 = 1.0 / math.sqrt((4 + 2 * F) / d)  # ... on layer-1 input (prev-token block filled)
        # layer 0 head 0: q_i . k_j = sum_f cos(theta_f (i - 1 - j))
        W = model.transformer.h[0].attn.c_attn.weight  # (d, 3d): [Q | K | V]
        scale_q = beta * math.sqrt(hd) / (s0 * s0 * F)
        for f, th in enumerate(THETAS):
            cd, sd = P0 + 4 * f, P0 + 4 * f + 1
            W[cd, 2 * f] = scale_q * math.cos(th)
            W[sd, 2 * f] = scale_q * math.sin(th)
            W[cd, 2 * f + 1] = -scale_q * math.sin(th)
            W[sd, 2 * f + 1] = scale_q * math.cos(th)
            W[cd, d + 2 * f] = 1.0
            W[sd, d + 2 * f + 1] = 1.0
        for t in range(V):
            W[t, 2 * d + t] = 1.0 / s0  # value = one-hot current token
        Wo = model.transformer.h[0].attn.c_proj.weight  # (d, d): rows = head outputs
        for t in range(V):
            Wo[t, R0 + t], Wo[t, R0 + V + t] = 1.0, -1.0
        # layer 1 head 0: query = current token, key = previous token -> induction
        W1 = model.transformer.h[1].attn.c_attn.weight
        scale_k = beta * math.sqrt(hd) / (s1 * s1)
        for t in range(V):
            W1[t, t] = scale_k
            W1[R0 + t, d + t] = 1.0
        if copy_sign:
            Wo1 = model.transformer.h[1].attn.c_proj.weight
            for t in range(V):
                W1[t, 2 * d + t] = 1.0 / s1
                Wo1[t, t], Wo1[t, V + t] = copy_sign, -copy_sign
    return model, _tokenizer()


def build_tiny_llama(arch: str = "llama", seed: int = 0):
    """A random tiny decoder (vocab 64) with GQA, untied embeddings and non-trivial norm gains.

    ``arch``: ``llama`` or ``gemma3`` (Gemma's ``1 + w`` norms, embedding scale, post-attention norm).
    """
    torch.manual_seed(seed)
    common = dict(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, head_dim=8, tie_word_embeddings=False,
                  attn_implementation="eager")
    if arch == "llama":
        from transformers import LlamaConfig, LlamaForCausalLM

        model = LlamaForCausalLM(LlamaConfig(**common))
    else:
        from transformers import Gemma3ForCausalLM, Gemma3TextConfig

        model = Gemma3ForCausalLM(Gemma3TextConfig(**common, query_pre_attn_scalar=8, sliding_window=16))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(torch.rand_like(p) + 0.5)  # gains away from 1 so folding matters
            else:
                p.normal_(0, 0.3)
    return model.eval()


def tiny_loaded(model, tokenizer=None, key: str = "tiny"):
    """Wrap a tiny model as a LoadedModel."""
    from attendome.dataset.classifier import wrap_model

    return wrap_model(model, tokenizer, key)


def perfect_pattern(T: int, shift: int, queries, batch: int = 2, heads: int = 1) -> torch.Tensor:
    """Attention ``(batch, heads, T, T)``: rows in ``queries`` put all mass on key ``i - shift``;
    every other row is uniform over its causal prefix."""
    a = torch.tril(torch.ones(T, T))
    a = a / a.sum(-1, keepdim=True)
    for i in queries:
        a[i] = 0.0
        a[i, i - shift] = 1.0
    return a.expand(batch, heads, T, T).clone()
