"""ONNX export: a model as one graph (inputs image and sex; outputs bone_age in months and
features; dynamic batch), its card beside it with the declared "io". Needs torch and onnx; the
runtime backend that runs such a graph without them is inference/onnx.py."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from boneage.errors import BoneAgeError
from boneage.fileio import atomic_write_json, ensure_writable_dir, file_sha256
from boneage.inference.predictor import TorchPredictor
from boneage.models.checkpoint import SCALE


def export_onnx(spec: str | Path, out: str | Path, opset: int = 17, share_weights: bool = False
                ) -> Path:
    """Write OUT.onnx, its heatmap graph OUT.cam.onnx and its model card OUT.json (the same
    card, marked as ONNX).

    share_weights: the graphs read their weights from the checkpoint's .safetensors (which
    must sit in the same folder) instead of holding a second copy: a few kilobytes, the same
    numbers. That is how the bundled model ships one set of weights for both backends.
    The heatmap graph (models/fusion.py CamInputs) gives Grad-CAM++ what it needs without
    torch; a network whose head it cannot differentiate gets none (heatmaps then need torch)."""
    import torch

    out = Path(out)
    if out.suffix != ".onnx":
        raise BoneAgeError(f"{out}: the ONNX file name must end in .onnx")
    from boneage.models.fusion import CamInputs, WithEmbedding

    src = TorchPredictor.load(spec)
    ensure_writable_dir(out.parent)  # a new folder is made, as `evaluate --out` makes one
    if share_weights and src.path.parent.resolve() != out.parent.resolve():
        raise BoneAgeError(f"{out}: --share-weights needs the .onnx in the folder of its "
                           f"weights ({src.path.parent})")
    size = int(src.card["input_size"])
    x = torch.rand(2, 1, size, size)
    sex = torch.tensor([1.0, 0.0])
    batch = {0: "batch"}
    _write_graph(WithEmbedding(src.model), (x, sex), ["bone_age", "features"],
                 {"image": batch, "sex": batch, "bone_age": batch, "features": batch},
                 out, src, opset, share_weights)
    onnx_info = {"opset": opset, "source": src.path.name if share_weights else str(src.path),
                 "weights": src.path.name if share_weights else "embedded",
                 "sha256": file_sha256(out)}
    try:
        cam = CamInputs(src.model).eval()
    except ValueError:
        cam = None
    cam_path = out.with_suffix(".cam.onnx")
    if cam is not None:
        names = [f"{kind}_{i}" for i in range(len(cam.members)) for kind in ("maps", "grad")]
        _write_graph(cam, (x[:1], sex[:1]), names, {}, cam_path, src, opset, share_weights)
        onnx_info["cam"] = {"file": cam_path.name, "sha256": file_sha256(cam_path),
                            "outputs": names}
    else:
        cam_path.unlink(missing_ok=True)
    # beside its own checkpoint (same stem) the two share one card, which now names the export
    from boneage.models.contract import io_contract

    io = io_contract(size, src.model.n_features)  # the graph answers in months
    atomic_write_json(out.with_suffix(".json"), {**src.card, "io": io, "onnx": onnx_info})
    return out


def _write_graph(module, inputs: tuple, output_names: list[str], dynamic: dict, out: Path,
                 src: TorchPredictor, opset: int, share_weights: bool) -> None:
    """One graph, its weights stored as the checkpoint stores them (int8 or float16) or read
    from the checkpoint itself; written whole or not at all."""
    import warnings

    import torch

    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # PRESERVE (the model is in eval mode) keeps each weight as saved instead of folding
            # batch norms into convolutions; ONNX Runtime fuses them itself when it loads
            torch.onnx.export(
                module, inputs, str(tmp), input_names=["image", "sex"],
                output_names=output_names, opset_version=opset, dynamo=False,
                training=torch.onnx.TrainingMode.PRESERVE, dynamic_axes=dynamic or None)
        if src.card.get("weights_dtype") == "int8":
            _store_int8(tmp, src.path)
        if src.card.get("weights_dtype") in ("float16", "int8"):
            _store_half(tmp)
        if share_weights:
            _share_weights(tmp, src.path)
        os.replace(tmp, out)
    except OSError as e:
        raise BoneAgeError(f"{out}: cannot write ({e.strerror or e})") from None
    finally:
        tmp.unlink(missing_ok=True)


def _store_half(path: Path) -> None:
    """Store every float32 weight that float16 holds exactly (all of them, for a model loaded
    from float16 weights) as float16 behind a Cast node: half the file, the same numbers."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    m = onnx.load(str(path))
    g = m.graph
    casts = []
    for init in list(g.initializer):
        if init.data_type != TensorProto.FLOAT or init.name.endswith(SCALE):
            continue
        a = numpy_helper.to_array(init)
        h = a.astype(np.float16)
        if a.size < 16 or not np.array_equal(h.astype(np.float32), a):
            continue
        g.initializer.remove(init)
        g.initializer.append(numpy_helper.from_array(h, f"{init.name}.fp16"))
        casts.append(helper.make_node("Cast", [f"{init.name}.fp16"], [init.name],
                                      to=TensorProto.FLOAT))
    for i, node in enumerate(casts):
        g.node.insert(i, node)
    onnx.save(m, str(path))


def _store_int8(path: Path, weights: Path) -> None:
    """Store each weight the checkpoint holds as int8 (models/checkpoint.py) as that int8
    tensor times its per-channel scale (Cast, Mul: folded once when ONNX Runtime loads the
    graph), checked to give the very float32 numbers the torch backend computes with."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    from safetensors.numpy import load_file

    state = load_file(str(weights))
    m = onnx.load(str(path))
    g = m.graph
    nodes = []
    for init in list(g.initializer):
        key = init.name.removeprefix("model.")
        if init.data_type != TensorProto.FLOAT or key + SCALE not in state:
            continue
        q, scale = state[key], state[key + SCALE]
        if not np.array_equal(q.astype(np.float32) * scale, numpy_helper.to_array(init)):
            raise BoneAgeError(f"{weights}: int8 weight {key} does not match the graph")
        g.initializer.remove(init)
        g.initializer.extend([numpy_helper.from_array(q, f"{init.name}.int8"),
                              numpy_helper.from_array(scale, f"{init.name}{SCALE}")])
        nodes += [helper.make_node("Cast", [f"{init.name}.int8"], [f"{init.name}.f32"],
                                   to=TensorProto.FLOAT),
                  helper.make_node("Mul", [f"{init.name}.f32", f"{init.name}{SCALE}"],
                                   [init.name])]
    for i, node in enumerate(nodes):
        g.node.insert(i, node)
    onnx.save(m, str(path))


def _share_weights(path: Path, weights: Path) -> None:
    """Point every initializer that is a checkpoint tensor (same name, dtype and shape) at its
    bytes inside the .safetensors file (ONNX external data: location, offset, length)."""
    import struct

    import onnx
    from onnx import TensorProto

    raw = weights.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8 : 8 + n])
    kinds = {TensorProto.FLOAT: "F32", TensorProto.FLOAT16: "F16", TensorProto.INT8: "I8"}
    m = onnx.load(str(path))
    for init in m.graph.initializer:
        key = init.name.removeprefix("model.").removesuffix(".fp16").removesuffix(".int8")
        entry = header.get(key)
        if (entry is None or kinds.get(init.data_type) != entry["dtype"]
                or list(entry["shape"]) != list(init.dims)):
            continue
        start, end = entry["data_offsets"]
        init.ClearField("raw_data")
        del init.external_data[:]
        for k, v in (("location", weights.name), ("offset", str(8 + n + start)),
                     ("length", str(end - start))):
            e = init.external_data.add()
            e.key, e.value = k, v
        init.data_location = TensorProto.EXTERNAL
    onnx.save(m, str(path))
