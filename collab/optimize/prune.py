"""Structured pruning that removes channels for real (smaller tensors, fewer FLOPs),
not masks that leave the dense computation in place.

A convolution's output channels can be removed when its output flows, through
channel-wise ops only (BatchNorm, activations, pooling, dropout), into exactly one
consumer: another convolution (its input channels are removed too) or a flatten
followed by a Linear (the matching input features are removed). Outputs that feed a
residual add or a concat are left alone: their channel sets are shared, and pruning
them would need the whole group pruned together. Channels are ranked by the L2 norm
of their filter.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

from collab.extras import missing

try:
    import torch
    import torch.nn.functional as F
    from torch import fx, nn
    from torch.fx.passes.shape_prop import ShapeProp
except ImportError as _e:
    raise missing(_e, __name__) from _e

from collab.errors import ConfigError, SplitError

_PASS_MODULES = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.SiLU,
    nn.GELU,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.Sigmoid,
    nn.Tanh,
    nn.MaxPool2d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool2d,
    nn.Dropout,
    nn.Dropout2d,
    nn.Identity,
)
_PASS_FUNCS: set[Any] = {
    F.relu,
    torch.relu,
    F.relu6,
    F.leaky_relu,
    F.silu,
    F.gelu,
    F.hardswish,
    torch.sigmoid,
    torch.tanh,
    F.max_pool2d,
    F.avg_pool2d,
    F.adaptive_avg_pool2d,
    F.dropout,
    torch.nn.functional.dropout2d,
}
_PASS_METHODS = {"relu", "sigmoid", "tanh", "contiguous"}


@dataclass(frozen=True, kw_only=True)
class PruneGroup:
    """A conv whose output channels can go, with what must shrink alongside."""

    conv: str
    channels: int
    batchnorms: tuple[str, ...]
    consumer: str
    consumer_kind: str  # "conv" or "linear"
    per_channel: int  # input features of the Linear per channel (flattened H*W), 1 for conv


def _trace(model: nn.Module, example: torch.Tensor) -> fx.GraphModule:
    try:
        gm = fx.symbolic_trace(model)
        ShapeProp(gm).propagate(example)
    except Exception as e:
        raise SplitError(f"cannot trace {type(model).__name__} for pruning: {e}") from e
    return gm


def _only_tensor_arg(node: fx.Node, src: fx.Node) -> bool:
    nodes = [a for a in (*node.args, *node.kwargs.values()) if isinstance(a, fx.Node)]
    return nodes == [src]


def _is_flatten(node: fx.Node, mods: dict[str, nn.Module]) -> bool:
    if node.op == "call_module":
        m = mods[str(node.target)]
        return bool(isinstance(m, nn.Flatten) and m.start_dim == 1)
    start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
    if node.op == "call_function" and node.target is torch.flatten:
        return bool(start == 1)
    return bool(node.op == "call_method" and node.target == "flatten" and start == 1)


def _is_passthrough(node: fx.Node, mods: dict[str, nn.Module]) -> bool:
    if node.op == "call_module":
        return isinstance(mods[str(node.target)], _PASS_MODULES)
    if node.op == "call_function":
        return node.target in _PASS_FUNCS
    return node.op == "call_method" and node.target in _PASS_METHODS


def find_groups(model: nn.Module, example: torch.Tensor) -> list[PruneGroup]:
    """Every conv whose output channels can be removed, in graph order."""
    gm = _trace(model, example)
    mods = dict(gm.named_modules())
    groups = []
    for node in gm.graph.nodes:
        if node.op != "call_module" or not isinstance(mods[str(node.target)], nn.Conv2d):
            continue
        conv = mods[str(node.target)]
        assert isinstance(conv, nn.Conv2d)
        if conv.groups != 1:
            continue
        cur, bns, flat_in = node, [], None
        while True:
            users = list(cur.users)
            if len(users) != 1 or not _only_tensor_arg(users[0], cur):
                break
            u = users[0]
            um = mods.get(str(u.target)) if u.op == "call_module" else None
            if isinstance(um, nn.BatchNorm2d) and flat_in is None:
                bns.append(str(u.target))
            elif isinstance(um, nn.Conv2d) and flat_in is None:
                if um.groups == 1:
                    groups.append(
                        PruneGroup(
                            conv=str(node.target),
                            channels=conv.out_channels,
                            batchnorms=tuple(bns),
                            consumer=str(u.target),
                            consumer_kind="conv",
                            per_channel=1,
                        )
                    )
                break
            elif isinstance(um, nn.Linear) and flat_in is not None:
                shape = flat_in.meta["tensor_meta"].shape
                groups.append(
                    PruneGroup(
                        conv=str(node.target),
                        channels=conv.out_channels,
                        batchnorms=tuple(bns),
                        consumer=str(u.target),
                        consumer_kind="linear",
                        per_channel=math.prod(shape[2:]),
                    )
                )
                break
            elif _is_flatten(u, mods) and flat_in is None:
                flat_in = cur
            elif not (_is_passthrough(u, mods) and flat_in is None):
                break
            cur = u
    return groups


def _keep(conv: nn.Conv2d, fraction: float) -> torch.Tensor:
    norms = conv.weight.detach().flatten(1).norm(dim=1)
    k = max(1, round(conv.out_channels * (1.0 - fraction)))
    return norms.topk(k).indices.sort().values


def _conv_like(c: nn.Conv2d, cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(
        cin,
        cout,
        c.kernel_size,  # type: ignore[arg-type]
        c.stride,  # type: ignore[arg-type]
        c.padding,  # type: ignore[arg-type]
        c.dilation,  # type: ignore[arg-type]
        groups=1,
        bias=c.bias is not None,
        padding_mode=c.padding_mode,
    )


@torch.no_grad()
def _apply(model: nn.Module, g: PruneGroup, keep: torch.Tensor) -> None:
    conv = model.get_submodule(g.conv)
    assert isinstance(conv, nn.Conv2d)
    new = _conv_like(conv, conv.in_channels, len(keep))
    new.weight.copy_(conv.weight[keep])
    if conv.bias is not None and new.bias is not None:
        new.bias.copy_(conv.bias[keep])
    model.set_submodule(g.conv, new)
    for name in g.batchnorms:
        bn = model.get_submodule(name)
        assert isinstance(bn, nn.BatchNorm2d)
        nb = nn.BatchNorm2d(
            len(keep),
            eps=bn.eps,
            momentum=bn.momentum,
            affine=bn.affine,
            track_running_stats=bn.track_running_stats,
        )
        for p in ("weight", "bias", "running_mean", "running_var"):
            t = getattr(bn, p)
            if t is not None:
                getattr(nb, p).copy_(t[keep])
        if bn.num_batches_tracked is not None and nb.num_batches_tracked is not None:
            nb.num_batches_tracked.copy_(bn.num_batches_tracked)
        model.set_submodule(name, nb)
    cons = model.get_submodule(g.consumer)
    if g.consumer_kind == "conv":
        assert isinstance(cons, nn.Conv2d)
        nc = _conv_like(cons, len(keep), cons.out_channels)
        nc.weight.copy_(cons.weight[:, keep])
        if cons.bias is not None and nc.bias is not None:
            nc.bias.copy_(cons.bias)
        model.set_submodule(g.consumer, nc)
    else:
        assert isinstance(cons, nn.Linear)
        cols = (keep[:, None] * g.per_channel + torch.arange(g.per_channel)[None, :]).reshape(-1)
        nl = nn.Linear(len(cols), cons.out_features, bias=cons.bias is not None)
        nl.weight.copy_(cons.weight[:, cols])
        if cons.bias is not None and nl.bias is not None:
            nl.bias.copy_(cons.bias)
        model.set_submodule(g.consumer, nl)


def check_fraction(fraction: float) -> float:
    if not (isinstance(fraction, (int, float)) and 0.0 < fraction < 1.0):
        raise ConfigError(f"pruning fraction must be strictly between 0 and 1, got {fraction!r}")
    return float(fraction)


def prune_channels(
    model: nn.Module,
    example: torch.Tensor,
    fraction: float,
    *,
    layers: str = "widest",
) -> tuple[nn.Module, list[PruneGroup]]:
    """A pruned copy of ``model``: ``fraction`` of the output channels removed from the
    ``"widest"`` prunable convs (those with the most channels) or from ``"all"`` of them.
    The original is untouched. Returns the copy and the groups that were pruned."""
    fraction = check_fraction(fraction)
    if layers not in ("widest", "all"):
        raise ConfigError(f"layers must be 'widest' or 'all', got {layers!r}")
    model = copy.deepcopy(model).eval()
    groups = find_groups(model, example)
    if not groups:
        raise SplitError(
            f"{type(model).__name__}: no convolution can be pruned structurally "
            "(every conv output feeds a residual add, a concat or several consumers)"
        )
    if layers == "widest":
        widest = max(g.channels for g in groups)
        groups = [g for g in groups if g.channels == widest]
    for g in groups:  # ranks come from the original weights; groups are disjoint convs
        _apply(model, g, _keep(model.get_submodule(g.conv), fraction))  # type: ignore[arg-type]
    try:
        with torch.no_grad():
            model(example)
    except Exception as e:  # e.g. a hard-coded reshape in forward()
        raise SplitError(f"{type(model).__name__} no longer runs after pruning: {e}") from e
    return model, groups


def count_macs(model: nn.Module, example: torch.Tensor) -> int:
    """Multiply-accumulates of one forward pass at the example's batch size 1 (conv +
    linear, the layers that dominate)."""
    gm = _trace(model, example[:1])
    mods = dict(gm.named_modules())
    total = 0
    for node in gm.graph.nodes:
        if node.op != "call_module":
            continue
        m = mods[str(node.target)]
        out = node.meta["tensor_meta"].shape
        if isinstance(m, nn.Conv2d):
            kh, kw = m.kernel_size
            total += math.prod(out[1:]) * (m.in_channels // m.groups) * kh * kw
        elif isinstance(m, nn.Linear):
            total += math.prod(out[1:]) * m.in_features
    return total
