"""Unit tier: the ONNX weight reader attributes anonymous MatMul weights through their named bias
(transposed to ``(out, in)``) and refuses a weight it cannot attribute."""

import numpy as np
import pytest

from attendome.core.onnx_bert import OnnxFormatError, _named_tensors, bert_from_onnx

P = "model.0.auto_model."


def _graph(tmp_path, with_bias: bool):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = rng.normal(size=(8, 6)).astype(np.float32)  # (in, out), as exporters store it
    emb = rng.normal(size=(20, 8)).astype(np.float32)
    inits = [numpy_helper.from_array(emb, P + "embeddings.word_embeddings.weight"),
             numpy_helper.from_array(w, "onnx::MatMul_1"),
             numpy_helper.from_array(np.zeros(6, np.float32), P + "encoder.layer.0.attention.self.query.bias")]
    nodes = [helper.make_node("MatMul", ["x", "onnx::MatMul_1"], ["mm"])]
    if with_bias:
        nodes.append(helper.make_node("Add", [P + "encoder.layer.0.attention.self.query.bias", "mm"], ["y"]))
    else:
        nodes.append(helper.make_node("Relu", ["mm"], ["y"]))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 6])], inits)
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph), str(path))
    return path, w


def test_anonymous_weight_is_named_by_its_bias(tmp_path):
    import onnx

    path, w = _graph(tmp_path, with_bias=True)
    sd = _named_tensors(onnx.load(str(path)).graph, path)
    assert set(sd) == {"embeddings.word_embeddings.weight", "encoder.layer.0.attention.self.query.bias",
                       "encoder.layer.0.attention.self.query.weight"}
    np.testing.assert_array_equal(sd["encoder.layer.0.attention.self.query.weight"].numpy(), w.T)  # (out, in)
    with pytest.raises(OnnxFormatError, match="attention score scale"):  # the reader goes on to the geometry
        bert_from_onnx(path)


def test_unattributable_weight_is_refused(tmp_path):
    path, _ = _graph(tmp_path, with_bias=False)
    with pytest.raises(OnnxFormatError, match="feeds no Add"):
        bert_from_onnx(path)
