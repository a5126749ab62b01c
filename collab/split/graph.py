"""Find the valid cuts of a traced model and carve head/tail sub-graphs.

A position in the topologically ordered graph is a *valid cut* when exactly one
input-dependent tensor is produced before it and used after it. Values that do not
depend on the input (parameters, constants) are simply copied to whichever side needs
them, so they never block a cut. Skip connections, concatenations and attention keep
several tensors alive at once, which is exactly what removes the cuts inside blocks.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import io
import math
import operator
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.fx as fx
from torch import nn
from torch.fx.passes.shape_prop import ShapeProp

from collab.errors import SplitError
from collab.log import logger

Granularity = Literal["block", "all"]
# Modules whose children are the blocks (cuts between children are block boundaries).
_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict, nn.TransformerEncoder)


class _Tracer(fx.Tracer):
    """fx tracer that steps into ``nn.TransformerEncoder`` (a leaf by default, so a stock
    encoder would be one opaque node): without masks it is its layers in sequence, then
    the optional final norm — exactly what we need for cuts between encoder layers."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        if isinstance(m, nn.TransformerEncoder):
            return False
        return bool(super().is_leaf_module(m, module_qualified_name))

    def call_module(
        self, m: nn.Module, forward: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        if isinstance(m, nn.TransformerEncoder) and len(args) == 1 and not kwargs:
            enc = m

            def layers_in_sequence(x: Any) -> Any:
                for layer in enc.layers:
                    x = layer(x)
                return enc.norm(x) if enc.norm is not None else x

            forward = layers_in_sequence
        return super().call_module(m, forward, args, kwargs)


@dataclass(frozen=True, kw_only=True)
class Cut:
    name: str
    node: str  # fx node whose output is the one tensor crossing the cut
    position: int  # index of that node in topological order
    shape: tuple[int, ...]  # with the example batch size as dim 0
    dtype: torch.dtype


@dataclass(frozen=True, kw_only=True)
class CutAnalysis:
    cuts: tuple[Cut, ...]  # kept, in topological order
    positions: int  # graph positions examined
    valid: int  # positions where one tensor crosses (deduplicated by tensor)
    dropped_interior: int  # valid but inside a block (granularity "block")
    merged: int  # valid but followed directly by a same-size op (kept the later one)


def trace(model: nn.Module, example: torch.Tensor) -> fx.GraphModule:
    """Symbolically trace and annotate shapes; SplitError names why tracing failed."""
    try:
        with torch.no_grad():
            model(example)
    except Exception as e:
        raise SplitError(
            f"running the model on the example input {tuple(example.shape)} failed: {type(e).__name__}: {e}"
        ) from e
    try:
        model = _out_of_place(copy.deepcopy(model))
    except Exception as e:  # a module holding e.g. a lock or a file cannot be copied
        logger.warning("cannot copy %s (%s); splitting it as is", type(model).__name__, e)
    try:
        tracer = _Tracer()
        graph = tracer.trace(model, concrete_args=_defaults(model))
        gm = fx.GraphModule(tracer.root, graph, type(model).__name__)
    except Exception as e:  # fx raises TraceError, TypeError, NotImplementedError, ...
        raise SplitError(
            f"cannot trace {type(model).__name__} with torch.fx ({type(e).__name__}: {e}); "
            "data-dependent control flow or non-tensor inputs cannot be split"
        ) from e
    _drop_specialised_args(gm)
    _functional_graph(gm)
    try:
        # ShapeProp prints a traceback on failure; the SplitError below says it all
        with torch.no_grad(), contextlib.redirect_stderr(io.StringIO()):
            ShapeProp(gm).propagate(example)
    except Exception as e:
        raise SplitError(
            f"running the traced model on the example input failed: {type(e).__name__}: {e}"
        ) from e
    _mark_shape_ints(gm, example[:1])
    out = _output_value(gm)
    meta = out.meta.get("tensor_meta")
    if not isinstance(out, fx.Node) or meta is None or not hasattr(meta, "shape"):
        raise SplitError("the model must return exactly one tensor")
    return gm


SHAPE_INT = "collab_shape_int"  # node.meta key: ("batch", None) or ("const", value)
_SHAPE_ARITH = {operator.mul, operator.add, operator.sub, operator.floordiv}


def _shape_only(n: fx.Node, memo: dict[fx.Node, bool]) -> bool:
    """Values computed from tensor *shapes* alone (``x.size(0)``, ``B, C, H, W = x.shape``)."""
    if n in memo:
        return memo[n]
    ok = False
    if (n.op == "call_method" and n.target in ("size", "dim")) or (
        n.op == "call_function"
        and n.target is getattr
        and len(n.args) > 1
        and n.args[1] in ("shape", "ndim")
    ):
        ok = True
    elif (
        n.op == "call_function" and n.target is operator.getitem and isinstance(n.args[0], fx.Node)
    ):
        ok = _shape_only(n.args[0], memo) and isinstance(n.args[1], int)
    elif n.op == "call_function" and n.target in _SHAPE_ARITH:
        ok = all(_shape_only(a, memo) for a in n.all_input_nodes)
    memo[n] = ok
    return ok


class _Recorder(fx.Interpreter):
    def __init__(self, gm: fx.GraphModule) -> None:
        super().__init__(gm)
        self.values: dict[fx.Node, Any] = {}

    def run_node(self, n: fx.Node) -> Any:
        out = super().run_node(n)
        self.values[n] = out
        return out


def _mark_shape_ints(gm: fx.GraphModule, x1: torch.Tensor) -> None:
    """Mark integers derived from shapes that a tail can recompute: the batch size (from
    its own input's dim 0) or a constant. Without this, ``b = x.size(0)`` at the top of a
    forward and ``view(b, -1)`` at the bottom would block every cut in between."""
    runs = []
    for b in (1, 3):
        rec = _Recorder(gm)
        with torch.no_grad():
            rec.run(x1.repeat(b, *([1] * (x1.dim() - 1))))
        runs.append(rec.values)
    memo: dict[fx.Node, bool] = {}
    for n in gm.graph.nodes:
        v1, v3 = runs[0].get(n), runs[1].get(n)
        if type(v1) is not int or type(v3) is not int or not _shape_only(n, memo):
            continue
        if v1 == v3:
            n.meta[SHAPE_INT] = ("const", v1)
        elif (v1, v3) == (1, 3):
            n.meta[SHAPE_INT] = ("batch", None)


def _out_of_place(model: nn.Module) -> nn.Module:
    """In-place activations alias the tensor a cut would export (the exporter then
    records the mutated value); the copy we split computes the same values out of place."""
    for m in model.modules():
        if getattr(m, "inplace", False) is True:
            setattr(m, "inplace", False)  # noqa: B010
    return model


_INPLACE_OPERATORS = {
    operator.iadd: operator.add,
    operator.isub: operator.sub,
    operator.imul: operator.mul,
    operator.itruediv: operator.truediv,
}


def _functional_graph(gm: fx.GraphModule) -> None:
    """Rewrite in-place calls (``x += y``, ``x.relu_()``, ``F.relu(x, inplace=True)``).
    The composition checks against the original model catch any aliasing this changes."""
    for n in gm.graph.nodes:
        if n.op == "call_function" and n.target in _INPLACE_OPERATORS:
            n.target = _INPLACE_OPERATORS[n.target]
        elif n.op == "call_function" and n.kwargs.get("inplace") is True:
            n.kwargs = {**n.kwargs, "inplace": False}
        elif (
            n.op == "call_method"
            and isinstance(n.target, str)
            and n.target.endswith("_")
            and not n.target.endswith("__")
            and hasattr(torch.Tensor, n.target[:-1])
        ):
            n.target = n.target[:-1]
    gm.recompile()


def _drop_specialised_args(gm: fx.GraphModule) -> None:
    """Remove the placeholders fx keeps for concrete_args, with their guard asserts."""
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    if not placeholders:
        raise SplitError("the model's forward takes no input")
    order = {n: i for i, n in enumerate(gm.graph.nodes)}
    for ph in placeholders[1:]:
        reach = _descendants(ph)
        if any(n.op == "output" or any(u not in reach for u in n.users) for n in reach):
            raise SplitError(
                f"the model must take exactly one tensor input; it also needs {ph.target!r}"
            )
        for n in sorted(reach, key=order.__getitem__, reverse=True):
            gm.graph.erase_node(n)
        gm.graph.erase_node(ph)
    gm.recompile()


def _descendants(n: fx.Node) -> set[fx.Node]:
    seen: set[fx.Node] = set()
    stack = list(n.users)
    while stack:
        u = stack.pop()
        if u not in seen:
            seen.add(u)
            stack.extend(u.users)
    return seen


def _defaults(model: nn.Module) -> dict[str, object]:
    """Optional forward arguments (``mask=None``, ``return_attn=False``) are fixed to their
    defaults: a split serves the one-tensor-in, one-tensor-out call."""
    try:
        params = list(inspect.signature(model.forward).parameters.values())
    except (TypeError, ValueError):
        return {}
    return {p.name: p.default for p in params[1:] if p.default is not inspect.Parameter.empty}


def _output_value(gm: fx.GraphModule) -> fx.Node:
    out = next(n for n in gm.graph.nodes if n.op == "output")
    val = out.args[0]
    if not isinstance(val, fx.Node):
        raise SplitError("the model must return exactly one tensor, not a tuple/list/dict")
    return val


def _module_stack(n: fx.Node) -> list[str]:
    return [qual for qual, _type in n.meta.get("nn_module_stack", {}).values()]


def _container_paths(nodes: list[fx.Node]) -> set[str]:
    """Module paths that are pure containers (the traced GraphModule loses their types)."""
    return {
        qual
        for n in nodes
        for qual, typ in n.meta.get("nn_module_stack", {}).values()
        if isinstance(typ, type) and issubclass(typ, _CONTAINERS)
    }


_NORMS = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)
_HEAVY_FUNCS = {
    "conv1d",
    "conv2d",
    "conv3d",
    "linear",
    "matmul",
    "mm",
    "bmm",
    "einsum",
    "baddbmm",
    "addmm",
}


def _is_light(gm: fx.GraphModule, n: fx.Node) -> bool:
    """Elementwise, normalisation or reshaping ops: a cut just before them is redundant."""
    if n.op == "call_module":
        mod = gm.get_submodule(str(n.target))
        return isinstance(mod, _NORMS) or not any(True for _ in mod.parameters())
    name = getattr(n.target, "__name__", str(n.target))
    return name not in _HEAVY_FUNCS and "__matmul__" not in name


def analyse(gm: fx.GraphModule, *, granularity: Granularity = "block") -> CutAnalysis:
    nodes = [n for n in gm.graph.nodes if n.op != "output"]
    pos = {n: i for i, n in enumerate(nodes)}
    out_val = _output_value(gm)
    end = len(nodes)  # position of the output node

    dep: dict[fx.Node, bool] = {}
    for n in nodes:
        # shape-derived integers are recomputed by the tail, so they never cross a cut
        dep[n] = n.op == "placeholder" or (
            SHAPE_INT not in n.meta and any(dep.get(a, False) for a in n.all_input_nodes)
        )
    last_use = {n: max((pos.get(u, end) for u in n.users), default=-1) for n in nodes}

    # Sweep: after position i, the live input-dependent values are those produced at <= i
    # and used at > i. Keep each single-live-value tensor once (its first position).
    live: set[fx.Node] = set()
    seen: set[fx.Node] = set()
    valid: list[fx.Node] = []
    for i, n in enumerate(nodes):
        if dep[n] and last_use[n] > i:
            live.add(n)
        live = {v for v in live if last_use[v] > i}
        if len(live) != 1:
            continue
        (v,) = live
        if v in seen or v.op == "placeholder" or v is out_val:
            continue
        seen.add(v)
        tm = v.meta.get("tensor_meta")
        if tm is None or not hasattr(tm, "dtype") or tm.dtype != torch.float32:
            logger.debug("cut after %s skipped: crossing value is not a float32 tensor", v.name)
            continue
        valid.append(v)

    containers = _container_paths(nodes)
    # module path -> last input-dependent node executed inside it (its output)
    last_in_scope: dict[str, fx.Node] = {}
    for n in nodes:
        if dep[n]:
            for path in _module_stack(n):
                last_in_scope[path] = n

    def interior(v: fx.Node) -> bool:
        return any(p not in containers and last_in_scope.get(p) is not v for p in _module_stack(v))

    kept = valid if granularity == "all" else [v for v in valid if not interior(v)]
    dropped = len(valid) - len(kept)
    merged = 0
    if granularity == "block":
        # conv -> bn -> relu, flatten, ...: one op away and the same size on the wire;
        # keep the later cut (runtimes fuse such ops, the transfer cost is identical).
        final: list[fx.Node] = []
        for v in kept:
            if (
                final
                and _directly_follows(final[-1], v, nodes, pos, dep)
                and _numel(final[-1]) == _numel(v)
                and _is_light(gm, v)
            ):
                final[-1] = v
                merged += 1
            else:
                final.append(v)
        kept = final

    names: set[str] = set()
    cuts = []
    for v in kept:
        name = _cut_name(v, last_in_scope)
        base, k = name, 1
        while name in names:
            k += 1
            name = f"{base}_{k}"
        names.add(name)
        tm = v.meta["tensor_meta"]
        cuts.append(
            Cut(name=name, node=v.name, position=pos[v], shape=tuple(tm.shape), dtype=tm.dtype)
        )
    return CutAnalysis(
        cuts=tuple(cuts),
        positions=len(nodes),
        valid=len(valid),
        dropped_interior=dropped,
        merged=merged,
    )


def _numel(v: fx.Node) -> int:
    return math.prod(v.meta["tensor_meta"].shape)


def _directly_follows(
    a: fx.Node, b: fx.Node, nodes: list[fx.Node], pos: dict[fx.Node, int], dep: dict[fx.Node, bool]
) -> bool:
    between = [n for n in nodes[pos[a] + 1 : pos[b]] if dep[n]]
    return not between and a in b.all_input_nodes


def _cut_name(v: fx.Node, last_in_scope: dict[str, fx.Node]) -> str:
    """The outermost module whose output crosses the cut (e.g. ``layer2``), else the op."""
    for path in _module_stack(v):
        if last_in_scope.get(path) is v:
            return path
    return v.name


def _copy_nodes(
    gm: fx.GraphModule, needed: set[fx.Node], env: dict[fx.Node, Any], g: fx.Graph
) -> None:
    for n in gm.graph.nodes:
        if n in needed and n not in env:
            env[n] = g.node_copy(n, lambda a: env[a])


def _ancestors(roots: list[fx.Node], stop: set[fx.Node] | None = None) -> set[fx.Node]:
    seen: set[fx.Node] = set()
    stack = list(roots)
    stop = stop or set()
    while stack:
        n = stack.pop()
        if n in seen or n in stop:
            continue
        seen.add(n)
        stack.extend(n.all_input_nodes)
    return seen


def with_cut_outputs(gm: fx.GraphModule, cuts: tuple[Cut, ...]) -> fx.GraphModule:
    """The same graph returning ``(output, *cut tensors)``, for a single ONNX export."""
    g = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    for n in gm.graph.nodes:
        if n.op != "output":
            env[n] = g.node_copy(n, lambda a: env[a])
    by_name = {n.name: n for n in gm.graph.nodes}
    g.output((env[_output_value(gm)], *(env[by_name[c.node]] for c in cuts)))
    return fx.GraphModule(gm, g, "WithCuts")


def carve(gm: fx.GraphModule, cut: Cut) -> tuple[fx.GraphModule, fx.GraphModule]:
    """(head, tail): head computes the crossing tensor, tail maps it to the output."""
    by_name = {n.name: n for n in gm.graph.nodes}
    v = by_name[cut.node]
    out_val = _output_value(gm)

    hg = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    _copy_nodes(gm, _ancestors([v]), env, hg)
    hg.output(env[v])

    tg = fx.Graph()
    feature = tg.placeholder("feature")
    feature.meta = dict(v.meta)
    tenv: dict[fx.Node, Any] = {v: feature}
    recompute = {n for n in gm.graph.nodes if SHAPE_INT in n.meta and n is not v}
    need = _ancestors([out_val], stop={v, *recompute})
    if any(n.op == "placeholder" for n in need):
        raise SplitError(f"cut {cut.name}: the tail would need the model input too")
    batch: fx.Node | None = None
    boundary = {a for m in need for a in m.all_input_nodes} & recompute
    for r in sorted(boundary, key=lambda a: a.name):
        kind, value = r.meta[SHAPE_INT]
        if kind == "const":
            tenv[r] = value
        else:
            if batch is None:
                batch = tg.call_method("size", (feature, 0))
            tenv[r] = batch
    _copy_nodes(gm, need, tenv, tg)
    tg.output(tenv[out_val])
    return fx.GraphModule(gm, hg, f"Head_{cut.node}"), fx.GraphModule(gm, tg, f"Tail_{cut.node}")
