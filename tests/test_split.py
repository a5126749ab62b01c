"""The partitioner on small hand-made graphs: chains, residuals, concatenations,
models without cuts, refusal and failure paths."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from collab.bundle import load_bundle
from collab.chain import BundleSessions
from collab.errors import ConfigError, SplitError
from collab.split import split_model
from collab.split.graph import analyse, carve, trace


class Chain(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(4, 8)
        self.act = nn.ReLU()
        self.fc2 = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class DenseBlock(nn.Module):
    """DenseNet-style: every layer sees the concatenation of all previous outputs."""

    def __init__(self, c: int, growth: int = 4, layers: int = 3) -> None:
        super().__init__()
        self.convs = nn.ModuleList(
            nn.Conv2d(c + i * growth, growth, 3, padding=1) for i in range(layers)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = [x]
        for conv in self.convs:
            feats.append(torch.relu(conv(torch.cat(feats, 1))))
        return torch.cat(feats, 1)


class Inception(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.b1 = nn.Conv2d(c, 4, 1)
        self.b3 = nn.Conv2d(c, 4, 3, padding=1)
        self.pool = nn.MaxPool2d(3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.b1(x), self.b3(x), self.pool(x)], 1)


class ConcatNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.dense1 = DenseBlock(4)
        self.trans = nn.Conv2d(16, 8, 1)
        self.incep = Inception(8)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flat = nn.Flatten()
        self.fc = nn.Linear(16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.incep(self.trans(self.dense1(self.stem(x))))
        return self.fc(self.flat(self.pool(x)))


class SkipToEnd(nn.Module):
    """The input is used at the very end: two tensors cross every position."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 4)
        self.b = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(torch.relu(self.a(x))) + x


class DataDependent(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:
            return self.fc(x)
        return -x


def _names(model: nn.Module, x: torch.Tensor, granularity: str = "block") -> list[str]:
    return [c.name for c in analyse(trace(model.eval(), x), granularity=granularity).cuts]  # type: ignore[arg-type]


def test_inplace_activations_do_not_break_checks(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3),
        nn.BatchNorm2d(8),
        nn.ReLU(inplace=True),
        nn.Conv2d(8, 8, 3),
        nn.ReLU(inplace=True),
        nn.Flatten(),
        nn.Linear(8 * 4 * 4, 3),
    ).eval()
    b = split_model(
        model,
        torch.randn(2, 3, 8, 8),
        tmp_path / "b",
        name="inplace",
        runs=2,
        progress=False,
        granularity="all",
    )  # cuts right before the in-place ReLUs too
    assert [sp.name for sp in b.manifest.split_points] == ["0", "1", "2", "3", "4", "5"]
    assert b.manifest.extra["refused"] == {}


class InplaceResidual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(4, 4, 3, padding=1)
        self.b = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.a(x).relu_()
        out = self.b(x)
        out += x
        return torch.nn.functional.relu(out, inplace=True).flatten(1)


def test_inplace_functions_and_methods(tmp_path: Path) -> None:
    torch.manual_seed(0)
    b = split_model(
        InplaceResidual().eval(),
        torch.randn(2, 4, 4, 4),
        tmp_path / "b",
        name="ip",
        runs=2,
        progress=False,
        granularity="all",
    )
    assert [sp.name for sp in b.manifest.split_points] == ["a", "relu_", "add", "relu"]
    assert b.manifest.extra["refused"] == {}


class BatchSizeAtTheTop(nn.Module):
    """Older code style: the batch size read once at the top, used at the bottom."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.c2 = nn.Conv2d(8, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 8 * 8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch = x.size(0)
        _, _, h, _ = x.shape
        x = torch.relu(self.c2(torch.relu(self.c1(x))))
        return self.fc(x.view(batch, -1) * (h / 8.0)) + x.new_zeros(batch, 5)


def test_shape_integers_are_recomputed_by_the_tail(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = BatchSizeAtTheTop().eval()
    b = split_model(
        model, torch.randn(2, 3, 8, 8), tmp_path / "b", name="bs", runs=2, progress=False
    )
    assert [sp.name for sp in b.manifest.split_points] == [
        "relu",
        "relu_1",
    ]  # 0 without recomputing
    x = np.random.default_rng(1).standard_normal((5, 3, 8, 8)).astype(np.float32)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    sessions = BundleSessions(b)
    for sp in b.manifest.split_points:  # batch 5 was never seen at export time
        out = sessions.tail(sp.name)(sessions.head(sp.name)(x))
        np.testing.assert_allclose(out, ref, atol=1e-5)


def test_chain_cuts_named_after_modules() -> None:
    # fc1 -> act is one op away and the same size: only the later cut is kept
    assert _names(Chain(), torch.randn(1, 4)) == ["act"]
    assert _names(Chain(), torch.randn(1, 4), "all") == ["fc1", "act"]


def test_concatenation_blocks_cut_only_between_blocks() -> None:
    torch.manual_seed(0)
    model, x = ConcatNet().eval(), torch.randn(1, 3, 8, 8)
    names = _names(model, x)
    assert names == ["stem", "dense1", "trans", "incep", "flat"]
    gm = trace(model, x)
    every = analyse(gm, granularity="all")
    # inside the dense/inception blocks several tensors are alive: no cut there at all
    assert not [c.name for c in every.cuts if c.name.startswith(("dense1.", "incep."))]
    with torch.no_grad():
        ref = model(x)
        for cut in every.cuts:
            head, tail = carve(gm, cut)
            assert torch.allclose(tail(head(x)), ref, atol=1e-6), cut.name


class StockEncoder(nn.Module):
    """torch's own nn.TransformerEncoder: a leaf for plain fx, fused fast path in eval."""

    def __init__(self) -> None:
        super().__init__()
        layer = nn.TransformerEncoderLayer(32, 4, 64, batch_first=True)
        self.enc = nn.TransformerEncoder(layer, 3, enable_nested_tensor=False)
        self.fc = nn.Linear(32, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.enc(x).mean(dim=1))


def test_stock_transformer_encoder_cuts_between_layers(tmp_path: Path) -> None:
    torch.manual_seed(0)
    fast = torch.backends.mha.get_fastpath_enabled()
    b = split_model(
        StockEncoder().eval(),
        torch.randn(2, 16, 32),
        tmp_path / "b",
        name="enc",
        runs=2,
        progress=False,
    )
    names = [sp.name for sp in b.manifest.split_points]
    assert names[:3] == ["enc.layers.0", "enc.layers.1", "enc"]  # "enc" = after the last layer
    assert torch.backends.mha.get_fastpath_enabled() == fast  # global switch restored


def test_model_without_cuts_gives_bundle_without_split_points(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="collab"):
        b = split_model(
            SkipToEnd(), torch.randn(2, 4), tmp_path / "b", name="skip", runs=2, progress=False
        )
    assert b.manifest.split_points == ()
    assert "only 0 usable cut" in caplog.text
    assert b.manifest.extra["valid_cuts"] == 0


def test_untraceable_model_names_the_cause(tmp_path: Path) -> None:
    with pytest.raises(SplitError, match="control flow"):
        split_model(DataDependent(), torch.randn(1, 4), tmp_path / "b", name="dd", progress=False)
    assert not (tmp_path / "b").exists()


class WithOptionalMask(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 8)
        self.b = nn.Linear(8, 2)

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | None = None, scale: float = 1.0
    ) -> torch.Tensor:
        h = torch.relu(self.a(x))
        if mask is not None:
            h = h * mask
        return self.b(h) * scale


class TwoOutputs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = self.a(x)
        return y, y + 1


def test_optional_forward_arguments_take_their_defaults(tmp_path: Path) -> None:
    model = WithOptionalMask().eval()
    assert _names(model, torch.randn(1, 4)) == ["relu", "b"]
    b = split_model(model, torch.randn(2, 4), tmp_path / "b", name="m", runs=2, progress=False)
    assert len(b.manifest.split_points) >= 1


def test_tuple_output_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SplitError, match="exactly one tensor"):
        split_model(TwoOutputs(), torch.randn(1, 4), tmp_path / "b", name="t", progress=False)
    assert not (tmp_path / "b").exists()


def test_rejects_non_module_and_nonempty_out(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nn\.Module"):
        split_model(lambda x: x, torch.randn(1, 4), tmp_path / "a", name="f", progress=False)  # type: ignore[arg-type]
    out = tmp_path / "full"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not empty"):
        split_model(Chain(), torch.randn(1, 4), out, name="c", progress=False)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_failure_midway_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import collab.split.api as api

    def boom(*a: object, **k: object) -> None:
        raise SplitError("profiling exploded")

    monkeypatch.setattr(api, "profile_chain", boom)
    with pytest.raises(SplitError, match="exploded"):
        split_model(Chain(), torch.randn(1, 4), tmp_path / "b", name="c", progress=False)
    assert list(tmp_path.iterdir()) == []


def test_failed_composition_check_refuses_cut_with_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import collab.split.api as api

    monkeypatch.setattr(api, "TORCH_ATOL", -1.0)  # no cut can pass: every one must be refused
    b = split_model(
        ConcatNet(), torch.randn(1, 3, 8, 8), tmp_path / "b", name="c", runs=2, progress=False
    )
    assert b.manifest.split_points == ()
    refused = b.manifest.extra["refused"]
    assert set(refused) == {"stem", "dense1", "trans", "incep", "flat"}
    assert all("tail(head(x)) differs" in why for why in refused.values())
    assert [s.path for s in b.manifest.segments] == [
        p.relative_to(tmp_path / "b").as_posix() for p in (tmp_path / "b" / "segments").iterdir()
    ]
    assert len(b.manifest.segments) == 1  # the whole model, uncut


def test_requested_opset_and_dynamic_batch(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = ConcatNet().eval()
    b = split_model(
        model, torch.randn(1, 3, 8, 8), tmp_path / "b", name="c", opset=13, runs=2, progress=False
    )
    assert b.manifest.opset == 13
    x = np.random.default_rng(0).standard_normal((5, 3, 8, 8)).astype(np.float32)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    for rel in b.manifest.files:
        if rel.endswith(".onnx"):
            m = onnx.load(str(b.path(rel)))
            assert [o.version for o in m.opset_import if o.domain in ("", "ai.onnx")] == [13], rel
    sessions = BundleSessions(b)
    for sp in b.manifest.split_points:
        feat = sessions.head(sp.name)(x)
        assert feat.shape == (5, *sp.feature_shape[1:])
        out = sessions.tail(sp.name)(feat)
        np.testing.assert_allclose(out, ref, atol=1e-4)
    assert load_bundle(tmp_path / "b").version == b.version
