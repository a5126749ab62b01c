"""Structured pruning removes channels for real and keeps the function where it should."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from collab.errors import ConfigError, SplitError
from collab.optimize.prune import count_macs, find_groups, prune_channels
from collab.optimize.train import FinetuneConfig, distillation_loss, train


class Chain(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(16 * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        return self.fc(self.flatten(self.pool(torch.relu(self.conv2(x)))))


class Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.a = nn.Conv2d(8, 12, 3, padding=1)
        self.b = nn.Conv2d(12, 8, 3, padding=1)
        self.head = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.stem(x)
        y = s + self.b(torch.relu(self.a(s)))
        return self.head(y.mean(dim=(2, 3)))


def _model(cls: type[nn.Module]) -> Any:  # attribute access on the concrete test models
    torch.manual_seed(0)
    m = cls()
    for mod in m.modules():
        if isinstance(mod, nn.BatchNorm2d):
            assert mod.running_mean is not None and mod.running_var is not None
            mod.running_mean.uniform_(-0.2, 0.2)
            mod.running_var.uniform_(0.5, 1.5)
    return m.eval()


def test_groups_follow_channelwise_ops_and_stop_at_residuals() -> None:
    g = {x.conv: x for x in find_groups(_model(Chain), torch.randn(1, 1, 8, 8))}
    assert set(g) == {"conv1", "conv2"}
    assert g["conv1"].batchnorms == ("bn1",) and g["conv1"].consumer == "conv2"
    assert (
        g["conv2"].consumer == "fc"
        and g["conv2"].consumer_kind == "linear"
        and g["conv2"].per_channel == 16
    )
    # stem and b feed the residual add: only a (inside the branch) is prunable
    assert [x.conv for x in find_groups(_model(Residual), torch.randn(1, 3, 8, 8))] == ["a"]


def test_zero_filters_are_the_ones_removed_and_output_is_unchanged() -> None:
    m = _model(Chain)
    with torch.no_grad():  # make half of conv2's filters dead: pruning them is exact
        m.conv2.weight[1::2] = 0
        m.conv2.bias[1::2] = 0
        m.fc.weight.view(10, 16, 16)[:, 1::2] = 0.0
    x = torch.randn(5, 1, 8, 8)
    p: Any
    p, groups = prune_channels(m, x[:1], 0.5, layers="widest")
    assert [g.conv for g in groups] == ["conv2"]
    assert p.conv2.out_channels == 8 and p.fc.in_features == 8 * 16 and m.conv2.out_channels == 16
    torch.testing.assert_close(p(x), m(x), rtol=1e-5, atol=1e-5)


def test_pruning_all_layers_shrinks_macs_and_bn() -> None:
    m = _model(Chain)
    x = torch.randn(1, 1, 8, 8)
    p: Any
    p, groups = prune_channels(m, x, 0.5, layers="all")
    assert len(groups) == 2 and p.bn1.num_features == 4 and p.conv2.in_channels == 4
    # conv1: 64*8*9 -> 64*4*9, conv2: 64*16*8*9 -> 64*8*4*9, fc: 256*10 -> 128*10
    assert count_macs(m, x) == 64 * 8 * 9 + 64 * 16 * 8 * 9 + 10 * 256
    assert count_macs(p, x) == 64 * 4 * 9 + 64 * 8 * 4 * 9 + 10 * 128
    assert p(torch.randn(3, 1, 8, 8)).shape == (3, 10)


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_fraction_outside_open_interval_is_config_error(fraction: float) -> None:
    with pytest.raises(ConfigError, match="between 0 and 1"):
        prune_channels(_model(Chain), torch.randn(1, 1, 8, 8), fraction)


def test_model_without_prunable_convs_is_refused() -> None:
    m = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten()).eval()  # output conv: no consumer
    with pytest.raises(SplitError, match="no convolution can be pruned"):
        prune_channels(m, torch.randn(1, 1, 8, 8), 0.5)


def test_distillation_loss_terms() -> None:
    torch.manual_seed(0)
    s, t, y = torch.randn(6, 10), torch.randn(6, 10), torch.randint(0, 10, (6,))
    ce = nn.functional.cross_entropy(s, y)
    torch.testing.assert_close(distillation_loss(s, t, y, temperature=4.0, alpha=0.0), ce)
    assert float(distillation_loss(t, t, y, temperature=4.0, alpha=1.0)) == pytest.approx(
        0.0, abs=1e-6
    )
    kl = nn.functional.kl_div(
        nn.functional.log_softmax(s / 2, 1), nn.functional.softmax(t / 2, 1), reduction="batchmean"
    )
    torch.testing.assert_close(distillation_loss(s, t, y, temperature=2.0, alpha=1.0), 4.0 * kl)


def test_fine_tune_recovers_a_pruned_model() -> None:
    """A learnable toy task: pruning hurts, a short fine-tune brings accuracy back."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 10, 600)
    x = rng.normal(0, 0.3, (600, 1, 8, 8)).astype(np.float32)
    x[np.arange(600), 0, y % 8, y // 8 * 2] += 3.0  # the class lights up one pixel
    m = train(_model(Chain), x[:500], y[:500], FinetuneConfig(epochs=8, lr=3e-3), progress=False)
    from collab.optimize.train import accuracy

    base = accuracy(m, x[500:], y[500:])
    assert base > 0.9
    p, _ = prune_channels(m, torch.from_numpy(x[:1]), 0.5, layers="all")
    train(p, x[:500], y[:500], FinetuneConfig(epochs=4, lr=2e-3), progress=False)
    assert accuracy(p, x[500:], y[500:]) >= base - 0.05


def test_train_config_validation() -> None:
    with pytest.raises(ConfigError):
        FinetuneConfig(alpha=1.5)
    with pytest.raises(ConfigError):
        FinetuneConfig(temperature=0)
