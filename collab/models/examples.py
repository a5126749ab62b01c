"""The example models: a digits CNN, ResNet-18/MobileNetV2-style CNNs and a tiny
transformer, all trained on inputs derived from scikit-learn's digits, and
EfficientNet-Lite0 with ImageNet weights (:mod:`collab.models.efficientnet`, re-exported
so ``collab split collab.models.examples:efficientnet_lite0`` names it like the others).

Every factory returns a module in eval mode with deterministic weights, so bundles
built on any machine from the same sources are numerically the same: the committed
trained weights by default, or with ``pretrained=False`` a seeded untrained init (the
starting point of training, federated learning and pruning experiments).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from collab.extras import missing

try:
    import torch
    import torch.nn.functional as F
    from torch import Tensor, nn
except ImportError as _e:
    raise missing(_e, __name__) from _e

from collab.errors import ConfigError
from collab.models import datasets
from collab.models.efficientnet import efficientnet_lite0
from collab.models.registry import (
    EXAMPLES,
    ExampleSpec,
    example_input,
    example_inputs,
    spec,
    weights_path,
)

__all__ = [
    "EXAMPLES",
    "DigitsCNN",
    "ExampleSpec",
    "MobileNetV2Style",
    "ResNet18Style",
    "TinyTransformer",
    "digits_cnn",
    "digits_weights_path",
    "efficientnet_lite0",
    "example_input",
    "example_inputs",
    "load_example",
    "mobilenetv2_style",
    "resnet18_style",
    "tiny_transformer",
]


@contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Seed weight init without disturbing the caller's global RNG. One torch thread:
    bit-reproducible, and faster than OpenMP spinning on a busy 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            yield
    finally:
        torch.set_num_threads(threads)


M = TypeVar("M", bound=nn.Module)


# --------------------------------------------------------------------------- digits CNN
class DigitsCNN(nn.Module):
    """Three convs and two linears for 8x8 digits; top-level leaves give named cuts."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(32, 32, 3, padding=1)
        self.relu2 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(2)  # 4x4
        self.conv3 = nn.Conv2d(32, 64, 3, padding=1)
        self.relu3 = nn.ReLU()
        self.pool2 = nn.MaxPool2d(2)  # 2x2
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(256, 64)
        self.relu4 = nn.ReLU()
        self.fc2 = nn.Linear(64, 10)

    def forward(self, x: Tensor) -> Tensor:
        x = self.pool1(self.relu2(self.conv2(self.relu1(self.conv1(x)))))
        x = self.pool2(self.relu3(self.conv3(x)))
        return self.fc2(self.relu4(self.fc1(self.flatten(x))))


def digits_weights_path() -> Path:
    return weights_path("digits")


def _load_trained(m: M, name: str) -> M:
    path = weights_path(name)
    if not path.is_file():
        raise ConfigError(
            f"missing trained weights {path}; run `collab train-example {name} --out {path}`"
        )
    m.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return m.eval()


def digits_cnn(pretrained: bool = True) -> DigitsCNN:
    """The digits CNN with the committed trained weights (or seeded untrained ones)."""
    with _seeded(0):
        m = DigitsCNN()
    return _load_trained(m, "digits") if pretrained else m.eval()


# --------------------------------------------------------------------------- ResNet-18 style
class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU()
        self.downsample: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.downsample(x))


class ResNet18Style(nn.Module):
    """ResNet-18 layout (4 stages x 2 basic blocks) at CIFAR scale, widths 16..128."""

    def __init__(self, num_classes: int = 10, widths: tuple[int, ...] = (16, 32, 64, 128)) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU()
        stages = []
        cin = widths[0]
        for i, w in enumerate(widths):
            stride = 1 if i == 0 else 2
            stages.append(nn.Sequential(BasicBlock(cin, w, stride), BasicBlock(w, w, 1)))
            cin = w
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.flatten(self.avgpool(x)))


# --------------------------------------------------------------------------- MobileNetV2 style
class ConvBNAct(nn.Sequential):
    def __init__(self, cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1) -> None:
        super().__init__(
            nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU6(),
        )


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        self.use_res = stride == 1 and cin == cout
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(ConvBNAct(cin, hidden, k=1))
        layers += [
            ConvBNAct(hidden, hidden, stride=stride, groups=hidden),
            nn.Conv2d(hidden, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        if self.use_res:
            return x + self.conv(x)
        return self.conv(x)


class MobileNetV2Style(nn.Module):
    """MobileNetV2 layout (expand 6, depthwise 3x3, linear bottleneck) at 32x32 scale."""

    # (expand t, channels c, repeats n, first stride s), as in the paper's table 2
    CONFIG = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 2, 2), (6, 96, 1, 1))

    def __init__(self, num_classes: int = 10, last: int = 320) -> None:
        super().__init__()
        layers: list[nn.Module] = [ConvBNAct(3, 16)]
        cin = 16
        for t, c, n, s in self.CONFIG:
            for i in range(n):
                layers.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        layers.append(ConvBNAct(cin, last, k=1))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.classifier = nn.Linear(last, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.flatten(self.pool(self.features(x))))


# --------------------------------------------------------------------------- transformer
class PositionalEmbedding(nn.Module):
    def __init__(self, tokens: int, dim: int) -> None:
        super().__init__()
        self.pos = nn.Parameter(torch.randn(1, tokens, dim) * 0.1)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.pos


class EncoderLayer(nn.Module):
    """Pre-norm encoder layer; attention written out so tracing and ONNX see plain ops."""

    def __init__(self, dim: int, heads: int, ff: int) -> None:
        super().__init__()
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.ln1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.ln2 = nn.LayerNorm(dim)
        self.ff1 = nn.Linear(dim, ff)
        self.act = nn.GELU()
        self.ff2 = nn.Linear(ff, dim)

    def forward(self, x: Tensor) -> Tensor:
        q, k, v = self.qkv(self.ln1(x)).chunk(3, dim=-1)
        q, k, v = (t.unflatten(-1, (self.heads, -1)).transpose(1, 2) for t in (q, k, v))
        att = F.softmax((q @ k.transpose(-2, -1)) * self.scale, dim=-1)
        x = x + self.proj((att @ v).transpose(1, 2).flatten(2))
        return x + self.ff2(self.act(self.ff1(self.ln2(x))))


class TinyTransformer(nn.Module):
    """A small encoder-only transformer classifying (N, tokens, dim) embeddings."""

    def __init__(
        self,
        tokens: int = datasets.TOKENS,
        dim: int = datasets.TOKEN_DIM,
        layers: int = 4,
        heads: int = 4,
        ff: int = 64,
        num_classes: int = 10,
    ) -> None:
        super().__init__()
        self.embed = PositionalEmbedding(tokens, dim)
        self.layers = nn.ModuleList(EncoderLayer(dim, heads, ff) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.embed(x)
        for layer in self.layers:
            x = layer(x)
        return self.head(self.norm(x).mean(dim=1))


# --------------------------------------------------------------------------- factories
@torch.no_grad()
def _calibrate_batchnorm(m: nn.Module, x: Tensor) -> None:
    """Set BatchNorm running statistics from real inputs, so a seeded untrained network
    has realistic activation scales (features, codecs and INT8 behave as when trained)."""
    bns = [mod for mod in m.modules() if isinstance(mod, nn.BatchNorm2d)]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average over the calibration batches
    m.train()
    for chunk in x.split(64):
        m(chunk)
    m.eval()
    for bn in bns:  # later training (fine-tuning, FL) tracks statistics as usual
        bn.momentum = 0.1


def _seeded_cnn(make: Callable[[], M], seed: int) -> M:
    x, _ = datasets.digits_rgb32("train")
    with _seeded(seed):
        m = make()
        _calibrate_batchnorm(m, torch.from_numpy(x[:64]))
    return m.eval()


def resnet18_style(pretrained: bool = True) -> ResNet18Style:
    """Trained on digits_rgb32 (committed weights), or the seeded untrained init."""
    if pretrained:
        with _seeded(18):
            return _load_trained(ResNet18Style(), "resnet")
    return _seeded_cnn(ResNet18Style, seed=18)


def mobilenetv2_style(pretrained: bool = True) -> MobileNetV2Style:
    """Trained on digits_rgb32 (committed weights), or the seeded untrained init."""
    if pretrained:
        with _seeded(2):
            return _load_trained(MobileNetV2Style(), "mobilenet")
    return _seeded_cnn(MobileNetV2Style, seed=2)


def tiny_transformer(pretrained: bool = True) -> TinyTransformer:
    """Trained on digits_tokens (committed weights), or the seeded untrained init."""
    with _seeded(4):
        m = TinyTransformer()
    return _load_trained(m, "transformer") if pretrained else m.eval()


def load_example(name: str, pretrained: bool = True) -> nn.Module:
    """Build an example model by registry name."""
    func = globals()[spec(name).factory.split(":")[1]]
    model: nn.Module = func(pretrained=pretrained)
    return model
