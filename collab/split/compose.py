"""One ONNX model from consecutive segments of a bundle (torch-free: onnx only).

Variants (e.g. an INT8 head) are quantized from the composed head, and keep their own
weights in one file; benchmarks compare the segment chain with the composed full model.
"""

from __future__ import annotations

import onnx
import onnx.compose

from collab.bundle import Bundle
from collab.errors import BundleError


def compose(bundle: Bundle, paths: tuple[str, ...]) -> onnx.ModelProto:
    """The chain ``paths`` (verified segment files, in run order) as one model with the
    first one's input and the last one's output names. Every segment after the first gets
    a name prefix, so names that two segment files happen to share cannot collide."""
    if not paths:
        raise BundleError("nothing to compose: no segments")
    models = [onnx.load_model_from_string(bundle.read_verified(p)) for p in paths]
    out = models[0]
    for i, m in enumerate(models[1:], 1):
        out = onnx.compose.merge_models(
            out, m, io_map=[(out.graph.output[0].name, m.graph.input[0].name)], prefix2=f"s{i}/"
        )
        opsets = {o.domain: o.version for o in out.opset_import}  # merge_models lists each again
        del out.opset_import[:]
        out.opset_import.extend(onnx.helper.make_opsetid(d, v) for d, v in opsets.items())
    if len(models) > 1:  # the last output carries its prefix: give it back its name
        last, name = out.graph.output[0].name, models[-1].graph.output[0].name
        for n in out.graph.node:
            n.input[:] = [name if t == last else t for t in n.input]
            n.output[:] = [name if o == last else o for o in n.output]
        out.graph.output[0].name = name
    return out
