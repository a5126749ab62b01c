"""The split table of a bundle as text (torch-free: ``collab inspect`` runs anywhere)."""

from __future__ import annotations

from collab.bundle import Bundle


def _shape(s: tuple[int, ...]) -> str:
    return "x".join(str(d) for d in s)


def _mb(b: Bundle, paths: tuple[str, ...]) -> str:
    return f"{sum(b.path(p).stat().st_size for p in paths) / 1e6:.2f}"


def split_table(b: Bundle) -> str:
    m = b.manifest
    lines = [
        f"model {m.model_name}  version {b.version[:12]}  opset {m.opset}  "
        f"dynamic batch {'yes' if m.dynamic_batch else 'no'}",
        f"input  {m.input_name} {m.input_dtype} {_shape(m.input_shape)}  {m.input_bytes / 1024:.2f} KB "
        f"(cloud-only sends this)",
        f"full   {len(m.segments)} segments ({_mb(b, m.full_paths())} MB, every weight once)  {m.full_ms:.3f} ms "
        f"(edge-only)  output {_shape(m.output_shape)}",
    ]
    acc = m.extra.get("accuracy")
    if isinstance(acc, dict) and "top1" in acc:
        lines.append(
            f"accuracy {acc['top1'] * 100:.2f}% top-1 on {acc.get('n', '?')} {acc.get('split', '')} inputs"
        )
    header = (
        f"{'idx':>3}  {'name':<14} {'feature shape':<14} {'KB':>8} {'vs input':>8} "
        f"{'head ms':>8} {'tail ms':>8} {'sum ms':>8}  variants"
    )
    lines += ["", header, "-" * len(header)]
    for sp in m.split_points:
        variants = ",".join(v.name for v in sp.head_variants) or "-"
        lines.append(
            f"{sp.index:>3}  {sp.name:<14} {_shape(sp.feature_shape):<14} {sp.feature_bytes / 1024:>8.2f} "
            f"{sp.feature_bytes / max(m.input_bytes, 1):>7.2f}x {sp.head_ms:>8.3f} {sp.tail_ms:>8.3f} "
            f"{sp.head_ms + sp.tail_ms:>8.3f}  {variants}"
        )
    if not m.split_points:
        lines.append("(no split points: only edge-only and cloud-only are possible)")
    refused = m.extra.get("refused") or {}
    for name, why in refused.items():
        lines.append(f"refused cut {name}: {why}")
    if m.full_variants:
        lines.append(
            "full-model variants: " + ", ".join(f"{v.name} {v.ms:.3f} ms" for v in m.full_variants)
        )
    return "\n".join(lines)
