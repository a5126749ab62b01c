"""Single-tensor cuts found in an ONNX graph itself (for models users already have).

A position between two nodes of the (topologically ordered) graph is a valid cut when
exactly one tensor computed from the model input crosses it: everything before it is a
head with that tensor as its only output, everything after it a tail with that tensor as
its only input. Tensors that depend on constants alone (initializers, ``Constant`` nodes
and what is computed from them, such as the shape arithmetic exporters emit for padding)
do not count: each side recomputes or copies them. Names used inside subgraphs (``If``,
``Loop``, ``Scan`` bodies) count as inputs of the node that owns the subgraph.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import onnx

# ops that map one tensor to one of the same size element by element: a cut just before
# one is never better than the cut just after it (same bytes, less edge work left out)
ELEMENTWISE = frozenset(
    {
        "Relu",
        "Clip",
        "Sigmoid",
        "HardSigmoid",
        "HardSwish",
        "LeakyRelu",
        "Elu",
        "Selu",
        "Tanh",
        "Gelu",
        "Erf",
        "Softplus",
        "Mish",
        "Identity",
        "Dropout",
        "BatchNormalization",
        "Mul",
        "Add",
        "Sub",
        "Div",
        "Cast",
        "PRelu",
        "Neg",
        "Abs",
        "Sqrt",
        "Exp",
        "Log",
    }
)


@dataclass(frozen=True)
class GraphCut:
    tensor: str  # the one tensor that crosses
    position: int  # cut after node index ``position``
    producer: str  # the op type that produces it


def _subgraph_inputs(node: onnx.NodeProto) -> set[str]:
    """Outer-scope names a node's subgraphs read (their own definitions excluded)."""
    names: set[str] = set()

    def walk(g: onnx.GraphProto) -> None:
        defined = {i.name for i in g.input} | {i.name for i in g.initializer}
        defined |= {o for n in g.node for o in n.output}
        for n in g.node:
            names.update(t for t in n.input if t and t not in defined)
            for a in n.attribute:
                for sub in (*([a.g] if a.HasField("g") else []), *a.graphs):
                    walk(sub)

    for a in node.attribute:
        for sub in (*([a.g] if a.HasField("g") else []), *a.graphs):
            walk(sub)
    return names


def node_inputs(node: onnx.NodeProto) -> set[str]:
    return {t for t in node.input if t} | _subgraph_inputs(node)


def constant_tensors(graph: onnx.GraphProto) -> set[str]:
    """Tensors that depend on no graph input (initializers and what follows from them)."""
    const = {i.name for i in graph.initializer}
    for n in graph.node:
        ins = node_inputs(n)
        if n.op_type == "Constant" or (ins and ins <= const):
            const.update(o for o in n.output if o)
    return const


def single_tensor_cuts(graph: onnx.GraphProto) -> list[GraphCut]:
    """Every position where exactly one non-constant tensor crosses, in graph order
    (positions right after the input and right before the output are not cuts)."""
    const = constant_tensors(graph)
    inputs = {i.name for i in graph.input} - {i.name for i in graph.initializer}
    n_nodes = len(graph.node)
    produced_at: dict[str, int] = {t: -1 for t in inputs}
    last_use: dict[str, int] = {}
    for i, n in enumerate(graph.node):
        for t in node_inputs(n):
            if t not in const:
                last_use[t] = i
        for o in n.output:
            if o and o not in const:
                produced_at[o] = i
    for out in graph.output:
        last_use[out.name] = n_nodes
    # sweep: tensors alive across the gap after node i
    starts: dict[int, list[str]] = {}
    ends: dict[int, list[str]] = {}
    for t, p in produced_at.items():
        e = last_use.get(t)
        if e is not None and e > p:
            starts.setdefault(p, []).append(t)
            ends.setdefault(e, []).append(t)
    alive: set[str] = set(starts.get(-1, []))
    cuts = []
    producer_op = {o: n.op_type for n in graph.node for o in n.output}
    for i in range(n_nodes - 1):
        alive.difference_update(ends.get(i, []))
        alive.update(starts.get(i, []))
        if len(alive) == 1:
            (t,) = alive
            if t not in inputs and produced_at[t] == i:  # one cut per tensor: right after it
                cuts.append(GraphCut(tensor=t, position=i, producer=producer_op.get(t, "")))
    return cuts


def block_cuts(graph: onnx.GraphProto, cuts: Iterable[GraphCut]) -> list[GraphCut]:
    """Drop cuts whose tensor only feeds one elementwise op: the cut after that op sends
    a tensor of the same size with that op already done on the edge."""
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in graph.node:
        for t in node_inputs(n):
            consumers.setdefault(t, []).append(n)
    kept = []
    for c in cuts:
        users = consumers.get(c.tensor, [])
        if len(users) == 1 and users[0].op_type in ELEMENTWISE:
            continue
        kept.append(c)
    return kept
