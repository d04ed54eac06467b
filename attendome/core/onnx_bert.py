"""A BERT encoder from an ONNX export: weights read from the graph into a ``BertModel`` state dict.

``paraphrase-MiniLM-L3-v2`` ships offline only as a sentence-transformers ONNX export. Its named
initializers carry the embeddings, the biases and the norms (``model.0.auto_model.<BertModel name>``);
the linear weights are anonymous (``onnx::MatMul_<n>``), stored ``(in, out)``. Each is found by
following its ``MatMul`` to the ``Add`` that adds a named bias ``<module>.bias``: the weight is then
``<module>.weight``, transposed to ``(out, in)``. The geometry comes from the graph too: width from the
embeddings, depth from the layer names, ``d_head`` from the attention's score scale (a ``Div`` by
``sqrt(d_head)``), ``layer_norm_eps`` from the ``LayerNormalization`` nodes. The pooler is absent
(sentence-transformers mean-pools the token states), so the state dict has none.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import torch

__all__ = ["OnnxFormatError", "bert_from_onnx", "build_onnx_bert_dir"]

_PREFIX = "model.0.auto_model."


class OnnxFormatError(ValueError):
    """The ONNX graph is not a BERT export this reader understands."""


def _named_tensors(graph, path) -> dict[str, torch.Tensor]:
    """Every weight of the export under its ``BertModel`` name: named initializers as they are,
    anonymous ``MatMul`` weights named after the bias their ``Add`` adds, transposed to ``(out, in)``."""
    from onnx import numpy_helper

    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    consumers: dict[str, list] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    sd: dict[str, torch.Tensor] = {}
    for name, arr in inits.items():
        if name.startswith(_PREFIX):
            sd[name[len(_PREFIX):]] = torch.from_numpy(np.array(arr, dtype=np.float32))
    for n in graph.node:
        if n.op_type != "MatMul" or not any(i in inits and not i.startswith(_PREFIX) for i in n.input):
            continue
        w_name = next(i for i in n.input if i in inits)
        adds = [c for c in consumers.get(n.output[0], []) if c.op_type == "Add"]
        biases = [i for c in adds for i in c.input if i.startswith(_PREFIX) and i.endswith(".bias")]
        if len(biases) != 1:
            raise OnnxFormatError(f"{path}: weight {w_name!r} feeds no Add with one named bias ({biases})")
        module = biases[0][len(_PREFIX):-len(".bias")]
        sd[f"{module}.weight"] = torch.from_numpy(np.array(inits[w_name], dtype=np.float32).T.copy())  # (out, in)
    return sd


def bert_from_onnx(path: str | Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """``BertConfig`` keyword arguments and a ``BertModel`` state dict (no pooler) from an ONNX export.

    Raises:
        OnnxFormatError: a weight that cannot be attributed, a missing tensor, or an unexpected graph.
    """
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    consts = {n.output[0]: numpy_helper.to_array(a.t) for n in graph.node if n.op_type == "Constant"
              for a in n.attribute if a.name == "value"}
    sd = _named_tensors(graph, path)
    emb = sd.get("embeddings.word_embeddings.weight")
    if emb is None:
        raise OnnxFormatError(f"{path}: no {_PREFIX}embeddings.word_embeddings.weight initializer")
    d = emb.shape[1]
    n_layers = len({int(m.group(1)) for k in sd if (m := re.match(r"encoder\.layer\.(\d+)\.", k))})
    scales = {float(consts[i]) for n in graph.node if n.op_type == "Div" and "/attention/self/" in n.name
              for i in n.input if i in consts}
    if len(scales) != 1:
        raise OnnxFormatError(f"{path}: expected one attention score scale, found {sorted(scales)}")
    d_head = round(scales.pop() ** 2)
    if d % d_head:
        raise OnnxFormatError(f"{path}: width {d} is not a multiple of the head size {d_head}")
    eps = {float(onnx.helper.get_attribute_value(a)) for n in graph.node if n.op_type == "LayerNormalization"
           for a in n.attribute if a.name == "epsilon"}
    config = dict(vocab_size=emb.shape[0], hidden_size=d, num_hidden_layers=n_layers,
                  num_attention_heads=d // d_head,
                  intermediate_size=int(sd["encoder.layer.0.intermediate.dense.weight"].shape[0]),
                  max_position_embeddings=int(sd["embeddings.position_embeddings.weight"].shape[0]),
                  type_vocab_size=int(sd["embeddings.token_type_embeddings.weight"].shape[0]),
                  layer_norm_eps=min(eps) if eps else 1e-12, hidden_act="gelu")
    return config, sd


def build_onnx_bert_dir(onnx_path: Path, tokenizer_dir: Path, out: Path) -> None:
    """Write a Hugging Face BERT folder (config, safetensors, the tokenizer files of ``tokenizer_dir``).

    Raises:
        OnnxFormatError: the state dict does not fill a ``BertModel`` exactly (missing or extra tensors).
    """
    from safetensors.torch import save_file
    from transformers import BertConfig, BertModel

    kwargs, sd = bert_from_onnx(onnx_path)
    config = BertConfig(**kwargs)
    ref = BertModel(config, add_pooling_layer=False).state_dict()
    missing = sorted(set(ref) - set(sd) - {"embeddings.position_ids", "embeddings.token_type_ids"})
    extra = sorted(set(sd) - set(ref))
    if missing or extra:
        raise OnnxFormatError(f"{onnx_path}: missing tensors {missing[:5]}, unexpected {extra[:5]}")
    for k, v in sd.items():
        if tuple(v.shape) != tuple(ref[k].shape):
            raise OnnxFormatError(f"{onnx_path}: {k} has shape {tuple(v.shape)}, BERT expects {tuple(ref[k].shape)}")
    config.save_pretrained(out)
    save_file({k: v.contiguous() for k, v in sd.items()}, str(out / "model.safetensors"), metadata={"format": "pt"})
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        if (tokenizer_dir / name).is_file():
            shutil.copyfile(tokenizer_dir / name, out / name)
    (out / "attendome_conversion.json").write_text(json.dumps(
        dict(converted_from="ONNX export (sentence-transformers)", tokenizer_from=str(tokenizer_dir.name)),
        indent=1) + "\n")
