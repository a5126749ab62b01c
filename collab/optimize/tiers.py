"""Device tiers: which optimization pipeline an edge device class gets.

Follows the seed design (<1 GB: pruning + INT8; <4 GB: pruning + INT8 +
distillation; larger: light optimization), corrected by what we measured on this
x86 CPU (docs/optimize.md): FP16 is no faster than FP32 in ONNX Runtime's CPU
provider (casts around most kernels), dynamic INT8 is several times *slower* for
convolutions (ConvInteger), and static per-channel QDQ INT8 is 2-3x faster at <1 %
agreement loss. So every tier gets static INT8, and only the small tiers pay the
accuracy of pruning and distillation. Operator fusion is always on (ORT_ENABLE_ALL).
"""

from __future__ import annotations

from dataclasses import dataclass

from collab.errors import ConfigError


@dataclass(frozen=True, kw_only=True)
class Tier:
    name: str
    memory: str  # device class, for the docs table
    quantize: tuple[str, ...]
    prune: float | None  # fraction of channels removed from the pruned layers
    prune_layers: str  # "widest" or "all"
    distill: float | None  # student width multiplier (fraction of channels kept)
    min_agreement: float  # for quantized variants
    min_agreement_distilled: float  # for the distilled student and its INT8 version


TIERS: dict[str, Tier] = {
    t.name: t
    for t in (
        Tier(
            name="mcu",
            memory="< 256 MB RAM, no OS scheduler to spare",
            quantize=("int8_static",),
            prune=0.5,
            prune_layers="all",
            distill=0.4,
            min_agreement=0.97,
            min_agreement_distilled=0.95,
        ),
        Tier(
            name="embedded",
            memory="< 1 GB (Raspberry Pi class)",
            quantize=("int8_static",),
            prune=0.5,
            prune_layers="widest",
            distill=0.5,
            min_agreement=0.98,
            min_agreement_distilled=0.96,
        ),
        Tier(
            name="mobile",
            memory="< 4 GB (phone, Jetson Nano class)",
            quantize=("int8_static",),
            prune=None,
            prune_layers="widest",
            distill=0.5,
            min_agreement=0.99,
            min_agreement_distilled=0.97,
        ),
        Tier(
            name="edge-server",
            memory=">= 4 GB (NUC, edge GPU box)",
            quantize=("int8_static",),
            prune=None,
            prune_layers="widest",
            distill=None,
            min_agreement=0.99,
            min_agreement_distilled=0.99,
        ),
    )
}


def get_tier(name: str) -> Tier:
    try:
        return TIERS[name]
    except KeyError:
        raise ConfigError(f"unknown tier {name!r} (choose from {', '.join(TIERS)})") from None
