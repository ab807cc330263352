"""Piper VITS ONNX -> our torch VITS (`agent.vits`) weights as safetensors.

Most ONNX initializers carry the original parameter names. Exceptions handled here:
- the phoneme embedding is exported as the initializer ``sid``;
- the duration flow's elementwise affine stores ``logs`` only as the folded constant
  ``exp(-logs)`` (``/dp/flows.0/Exp_output_0``, consumed as ``(x - m) * it``), so logs = -log(it);
- the flow's WaveNet convolutions were weight-normed; the export folded them into unnamed
  ``onnx::Conv_*`` tensors, whose owner we read off the Conv node's name
  (``/flow/flows.6/enc/in_layers.0/Conv`` -> ``flow.flows.6.enc.in_layers.0.weight``).
Loading is strict: every parameter of our module must be filled, and every weight-like
initializer must be used.

The same preparation also writes a patched copy of the ONNX graph for fast bulk synthesis with
onnxruntime: its two internal random draws (RandomNormalLike) become slices of noise the caller
passes in (``noise_dp`` (1, 2, N), ``noise_prior`` (1, 192, M)), so synthesis is deterministic for
a seed and identical to the torch model given the same noise; and the phoneme durations and the
decoder's input latents are exposed as extra outputs.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from agent.assets.cards import AssetError, ModelCard, package_file

VERSION = 1


def onnx_state_dict(onnx_path: Path) -> dict[str, np.ndarray]:
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(onnx_path))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    state: dict[str, np.ndarray] = {}
    for name, arr in inits.items():
        if name == "sid":
            state["enc_p.emb.weight"] = arr
        elif name.split(".")[0] in ("enc_p", "dp", "flow", "dec"):
            state[name] = arr
    folded = inits.get("/dp/flows.0/Exp_output_0")
    if "dp.flows.0.logs" not in state and folded is not None:
        state["dp.flows.0.logs"] = -np.log(folded)
    for node in model.graph.node:
        if node.op_type in ("Conv", "ConvTranspose") and node.input[1].startswith("onnx::"):
            owner = node.name.strip("/").rsplit("/", 1)[0].replace("/", ".")
            state[f"{owner}.weight"] = inits[node.input[1]]
    return state


def build_from_onnx(onnx_path: Path):  # -> agent.vits.VITS
    import torch

    from agent.vits import VITS, VITSConfig

    model = VITS(VITSConfig())
    state = {k: torch.tensor(np.array(v, dtype=np.float32)) for k, v in onnx_state_dict(onnx_path).items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise AssetError(f"{onnx_path}: not a Piper VITS layout we know (missing {missing[:3]}, unexpected {unexpected[:3]})")
    return model.eval()


NOISE_INPUTS = ("noise_dp", "noise_prior")


def patch_onnx(onnx_path: Path, out_path: Path) -> None:
    """Write a copy of the voice graph with caller-supplied noise and extra outputs."""
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load(str(onnx_path))
    graph = model.graph
    randoms = [n for n in graph.node if n.op_type == "RandomNormalLike"]
    if len(randoms) != 2 or not randoms[0].name.startswith("/dp/"):
        raise AssetError(f"{onnx_path}: expected two RandomNormalLike nodes (duration predictor first)")
    channels = {"noise_dp": 2, "noise_prior": 192}
    for node, noise_name in zip(randoms, NOISE_INPUTS, strict=True):
        graph.input.append(helper.make_tensor_value_info(noise_name, TensorProto.FLOAT, [1, channels[noise_name], None]))
        shape_out = f"{node.name}/noise_shape"
        zeros, axes = f"{node.name}/noise_starts", f"{node.name}/noise_axes"
        graph.initializer.extend(
            [helper.make_tensor(zeros, TensorProto.INT64, [3], [0, 0, 0]), helper.make_tensor(axes, TensorProto.INT64, [3], [0, 1, 2])]
        )
        idx = list(graph.node).index(node)
        graph.node.remove(node)
        graph.node.insert(idx, helper.make_node("Slice", [noise_name, zeros, shape_out, axes], [node.output[0]], name=f"{node.name}/noise_slice"))
        graph.node.insert(idx, helper.make_node("Shape", [node.input[0]], [shape_out], name=f"{node.name}/noise_shape"))
    ceil = next(n for n in graph.node if n.op_type == "Ceil")
    conv_pre = next(n for n in graph.node if n.op_type == "Conv" and n.input[1] == "dec.conv_pre.weight")
    graph.output.append(helper.make_tensor_value_info(ceil.output[0], TensorProto.FLOAT, [1, 1, None]))
    graph.output.append(helper.make_tensor_value_info(conv_pre.input[0], TensorProto.FLOAT, [1, 192, None]))
    onnx.checker.check_model(model)
    onnx.save(model, str(out_path))


def convert(card: ModelCard, src: Path, out_dir: Path) -> None:
    from safetensors.torch import save_file

    model = build_from_onnx(src)
    meta = json.loads(package_file(card, card.source["extra_files"]["config"]).read_text())
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out_dir / "model.safetensors"))
    (out_dir / "voice.json").write_text(json.dumps(meta, indent=2, ensure_ascii=False))
    patch_onnx(src, out_dir / "voice.onnx")
