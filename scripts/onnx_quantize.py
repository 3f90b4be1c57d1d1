"""Quantizes the dynamic-shape CenterFace to 8 bits (weights int8 per channel, activations uint8).

Used once by scripts/setup.sh: `centerface-dyn.onnx` -> `centerface-int8.onnx`, the agent's
default face model (ONNX Runtime runs its QDQ graph with integer kernels, VNNI where the CPU has
it). Static quantization needs activation ranges: they are calibrated (min/max) on frames built
here from the *tuning* faces only (LFW subset 0..69 and the astronaut's face, never the held-out
70..99 that `bench vision` reports on), pasted on cabin-like backgrounds over the lighting, sizes
and tint the simulator uses, plus real-photo frames from astronaut.png. Deterministic: a fixed
seed, so the same inputs give a byte-identical model.

The stem (first convolution, first depthwise convolution) and the batch norms after the
transposed convolutions stay in float; see `exclude` below. `bench vision --model` compares
models against the float judge.

Usage: onnx_quantize.py IN_DYN_ONNX FACES_DIR OUT
"""
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
from PIL import Image
from onnx import version_converter
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process

# the pipeline's usual input (a 640 x 360 frame at input_max_side 640, on the 32 grid)
H, W = 352, 640
FRAMES = 48
TUNING_FACES = 70  # LFW faces 70..99 are held out


def resize(img: np.ndarray, h: int, w: int) -> np.ndarray:
    """Bilinear resize of an HxWxC float image (numpy only)."""
    sh, sw = img.shape[:2]
    ys = np.clip((np.arange(h) + 0.5) * sh / h - 0.5, 0, sh - 1)
    xs = np.clip((np.arange(w) + 0.5) * sw / w - 0.5, 0, sw - 1)
    y0, x0 = np.floor(ys).astype(int), np.floor(xs).astype(int)
    y1, x1 = np.minimum(y0 + 1, sh - 1), np.minimum(x0 + 1, sw - 1)
    fy, fx = (ys - y0)[:, None, None], (xs - x0)[None, :, None]
    top = img[y0][:, x0] * (1 - fx) + img[y0][:, x1] * fx
    bottom = img[y1][:, x0] * (1 - fx) + img[y1][:, x1] * fx
    return top * (1 - fy) + bottom * fy


def load_faces(faces_dir: Path) -> tuple[list[np.ndarray], np.ndarray]:
    lfw = np.load(faces_dir / "lfw_subset.npy")[:TUNING_FACES].astype(np.float32)
    if lfw.max() <= 1.0:
        lfw = lfw * 255.0
    faces = [np.repeat(f[:, :, None], 3, axis=2) for f in lfw]
    astronaut = np.asarray(Image.open(faces_dir / "astronaut.png").convert("RGB"))
    faces.append(astronaut[50:186, 168:280].astype(np.float32))
    return faces, astronaut.astype(np.float32)


def frames(faces: list[np.ndarray], astronaut: np.ndarray):
    rng = np.random.default_rng(20261125)
    for k in range(FRAMES):
        if k % 6 == 5:
            # a real photograph: the astronaut picture, cropped and scaled to the input
            y, x = int(rng.integers(0, 200)), int(rng.integers(0, 100))
            img = resize(astronaut[y : y + 312, x : x + 412], H, W)
        else:
            light = rng.uniform(0.6, 1.25)
            t = (np.arange(H, dtype=np.float32) / H)[:, None]
            base = (30 + 50 * (1 - t)) * light
            img = np.stack([base, base * 1.05, base * 1.2], axis=2) * np.ones((1, W, 1), np.float32)
            img = img + rng.normal(0, 3, size=img.shape)
            for _ in range(int(rng.integers(1, 5))):
                face = faces[int(rng.integers(0, len(faces)))]
                size = int(rng.integers(24, 141))
                tone = np.array([rng.uniform(0.85, 1.15), rng.uniform(0.75, 1.0), rng.uniform(0.6, 0.9)])
                patch = resize(face, size, size) * tone * light * rng.uniform(0.8, 1.2)
                y, x = int(rng.integers(0, H - size)), int(rng.integers(0, W - size))
                img[y : y + size, x : x + size] = patch
            if rng.random() < 0.15:
                img = img * 0.08  # tinted glass
        img = np.clip(img, 0, 255).astype(np.float32)
        yield img.transpose(2, 0, 1)[None].copy()


class Reader(CalibrationDataReader):
    def __init__(self, name: str, faces, astronaut):
        self.name = name
        self.it = frames(faces, astronaut)

    def get_next(self):
        x = next(self.it, None)
        return None if x is None else {self.name: x}


def main(src: str, faces_dir: str, dst: str) -> None:
    model = onnx.load(src)
    # per-channel DequantizeLinear needs opset 13; CenterFace is exported at opset 9
    model = version_converter.convert_version(model, 13)
    name = model.graph.input[0].name
    # name the nodes (the export left them unnamed) so that some can be left in float
    for i, node in enumerate(model.graph.node):
        node.name = node.name or f"{node.op_type.lower()}_{i}"
    # The stem stays in float: the first convolution and the first depthwise one see raw pixel
    # values (0-255, no normalization) at full resolution, where a dim face in a dark cabin
    # spans a few levels; quantized, they cost recall (on the tuning cabins: 4-6 faces left
    # visible with either one quantized, none with both in float).
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    depthwise = [n for n in convs if any(a.name == "group" and a.i > 1 for a in n.attribute)]
    exclude = [convs[0].name, depthwise[0].name]
    faces, astronaut = load_faces(Path(faces_dir))
    with tempfile.TemporaryDirectory() as tmp:
        op13, pre = Path(tmp) / "op13.onnx", Path(tmp) / "pre.onnx"
        onnx.save(model, op13)
        # fold batch norms and constants first, so that ranges are those of the fused graph
        quant_pre_process(str(op13), str(pre), skip_symbolic_shape=True)
        quantize_static(
            str(pre),
            dst,
            Reader(name, faces, astronaut),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
            # the batch norms after the transposed convolutions (not folded) stay in float
            op_types_to_quantize=["Conv", "ConvTranspose", "Add", "Relu", "Sigmoid"],
            nodes_to_exclude=exclude,
        )
    onnx.checker.check_model(onnx.load(dst))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3])
