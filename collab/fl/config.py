"""FL configuration: keyword-only frozen dataclasses, loaded strictly from YAML.

Everything is validated here so a malformed file fails with ConfigError before any
process, broker or key is created.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from collab.errors import ConfigError

Mode = Literal["plain", "dp", "he", "dp+he"]
MODES: tuple[str, ...] = ("plain", "dp", "he", "dp+he")
#: models collab.fl.model can build (kept here so validating a config never imports torch)
MODEL_NAMES: tuple[str, ...] = ("digits_cnn", "digits_mlp_1m")


@dataclass(frozen=True, kw_only=True)
class HEParams:
    """CKKS parameters of one federation (all members must use the same)."""

    poly_modulus_degree: int = 8192
    coeff_mod_bit_sizes: tuple[int, ...] = (60, 40)
    scale_bits: int = 40
    #: "symmetric": members encrypt with the secret key they hold anyway (half the CPU of
    #: public-key encryption) and the aggregator's context carries NO key at all, so it
    #: cannot even forge a contribution. "public_key": the aggregator gets the public key.
    encryption: str = "symmetric"

    def __post_init__(self) -> None:
        if self.encryption not in ("symmetric", "public_key"):
            raise ConfigError(f"he.encryption must be symmetric or public_key, got {self.encryption!r}")
        n = self.poly_modulus_degree
        if n not in (2048, 4096, 8192, 16384, 32768):
            raise ConfigError(f"he.poly_modulus_degree must be a power of two in 2048..32768, got {n}")
        if len(self.coeff_mod_bit_sizes) < 2 or any(not 20 <= b <= 60 for b in self.coeff_mod_bit_sizes):
            raise ConfigError("he.coeff_mod_bit_sizes needs >= 2 primes of 20..60 bits, got "
                              f"{list(self.coeff_mod_bit_sizes)}")
        if not 20 <= self.scale_bits < self.coeff_mod_bit_sizes[0]:
            raise ConfigError(f"he.scale_bits must be in [20, first prime bits), got {self.scale_bits}")

    @property
    def slots(self) -> int:
        return self.poly_modulus_degree // 2


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    name: str = "digits_cnn"
    #: "all" or module-name prefixes (e.g. ["classifier"]) whose parameters are federated.
    federated: str | list[str] = "all"

    def __post_init__(self) -> None:
        if self.name not in MODEL_NAMES:
            raise ConfigError(f"model.name must be one of {list(MODEL_NAMES)}, got {self.name!r}")
        if isinstance(self.federated, str) and self.federated != "all":
            raise ConfigError("model.federated must be 'all' or a list of module names")
        if isinstance(self.federated, list) and not self.federated:
            raise ConfigError("model.federated list is empty")


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    local_epochs: int = 1
    batch_size: int = 32
    lr: float = 0.05
    momentum: float = 0.0
    prox_mu: float = 0.0

    def __post_init__(self) -> None:
        _positive("train.local_epochs", self.local_epochs)
        _positive("train.batch_size", self.batch_size)
        _positive("train.lr", self.lr)
        if not 0 <= self.momentum < 1:
            raise ConfigError(f"train.momentum must be in [0, 1), got {self.momentum}")
        if self.prox_mu < 0:
            raise ConfigError(f"train.prox_mu must be >= 0, got {self.prox_mu}")


@dataclass(frozen=True, kw_only=True)
class ServerConfig:
    optimizer: Literal["fedavg", "fedadam"] = "fedavg"
    lr: float = 1.0
    beta1: float = 0.9
    beta2: float = 0.99
    tau: float = 1e-3

    def __post_init__(self) -> None:
        if self.optimizer not in ("fedavg", "fedadam"):
            raise ConfigError(f"server.optimizer must be fedavg or fedadam, got {self.optimizer!r}")
        _positive("server.lr", self.lr)


@dataclass(frozen=True, kw_only=True)
class RoundConfig:
    #: Poisson sampling rate of clients per round (feeds the accountant).
    sample_rate: float = 1.0
    #: aggregate at the deadline only if at least this many sampled clients reported.
    min_clients: int = 2
    deadline_s: float = 60.0

    def __post_init__(self) -> None:
        if not 0 < self.sample_rate <= 1:
            raise ConfigError(f"round.sample_rate must be in (0, 1], got {self.sample_rate}")
        _positive("round.min_clients", self.min_clients)
        _positive("round.deadline_s", self.deadline_s)


@dataclass(frozen=True, kw_only=True)
class DPConfig:
    clip: float = 1.0
    noise_multiplier: float = 1.0
    delta: float = 1e-5
    epsilon_budget: float | None = None
    #: DP weights are min(1, n_k / weight_cap) (bounded sensitivity); None = uniform.
    weight_cap: float | None = None
    #: reporters assumed to collude with the aggregator (their noise shares are known).
    assumed_colluders: int = 0

    def __post_init__(self) -> None:
        _positive("dp.clip", self.clip)
        _positive("dp.noise_multiplier", self.noise_multiplier)
        if not 0 < self.delta < 1:
            raise ConfigError(f"dp.delta must be in (0, 1), got {self.delta}")
        if self.epsilon_budget is not None:
            _positive("dp.epsilon_budget", self.epsilon_budget)
        if self.weight_cap is not None:
            _positive("dp.weight_cap", self.weight_cap)
        if self.assumed_colluders < 0:
            raise ConfigError("dp.assumed_colluders must be >= 0")


@dataclass(frozen=True, kw_only=True)
class HEConfig:
    poly_modulus_degree: int = 8192
    coeff_mod_bit_sizes: list[int] = field(default_factory=lambda: [60, 40])
    scale_bits: int = 40
    encryption: str = "symmetric"

    def params(self) -> HEParams:
        return HEParams(poly_modulus_degree=self.poly_modulus_degree,
                        coeff_mod_bit_sizes=tuple(self.coeff_mod_bit_sizes), scale_bits=self.scale_bits,
                        encryption=self.encryption)

    def __post_init__(self) -> None:
        self.params()


@dataclass(frozen=True, kw_only=True)
class PublicConfig:
    """Public pretraining: a stratified share of the digits TRAINING split is declared
    public, never given to any client, and used to pretrain the whole model before the
    federation starts (the federated modules then fine-tune under DP). The test split is
    untouched. ``fraction: 0`` (default) = no public data, seeded random init."""

    fraction: float = 0.0
    epochs: int = 40
    batch_size: int = 32
    lr: float = 0.05
    momentum: float = 0.9
    #: add shifted copies (±1 pixel) of every public image: more public data at no privacy cost.
    augment: bool = True
    #: start the FEDERATED modules from the seeded random init instead of the public
    #: model's values (the federation then learns them from private data alone).
    reset_federated: bool = False

    def __post_init__(self) -> None:
        if not 0 <= self.fraction < 1:
            raise ConfigError(f"public.fraction must be in [0, 1), got {self.fraction}")
        _positive("public.epochs", self.epochs)
        _positive("public.batch_size", self.batch_size)
        _positive("public.lr", self.lr)
        if not 0 <= self.momentum < 1:
            raise ConfigError(f"public.momentum must be in [0, 1), got {self.momentum}")

    @property
    def enabled(self) -> bool:
        return self.fraction > 0


@dataclass(frozen=True, kw_only=True)
class SimulateConfig:
    """Knobs of the local (simulated) federation only."""

    #: seconds a client waits between training and upload (a slow uplink).
    upload_delay_s: float = 0.0
    #: evaluate the global model on the test set after every round (key holder side).
    evaluate: bool = True

    def __post_init__(self) -> None:
        if self.upload_delay_s < 0:
            raise ConfigError("simulate.upload_delay_s must be >= 0")


@dataclass(frozen=True, kw_only=True)
class FLConfig:
    federation: str = "fl"
    seed: int = 0
    rounds: int = 20
    clients: int = 10
    dirichlet_alpha: float = 0.5
    modes: list[str] = field(default_factory=lambda: ["plain"])
    broker: str | None = None
    out: str = "fl-out"
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    server: ServerConfig = field(default_factory=ServerConfig)
    round: RoundConfig = field(default_factory=RoundConfig)
    dp: DPConfig = field(default_factory=DPConfig)
    he: HEConfig = field(default_factory=HEConfig)
    public: PublicConfig = field(default_factory=PublicConfig)
    simulate: SimulateConfig = field(default_factory=SimulateConfig)

    def __post_init__(self) -> None:
        if not self.federation.replace("-", "").replace("_", "").isalnum():
            raise ConfigError(f"federation must be [A-Za-z0-9_-]+ (an MQTT topic level), got {self.federation!r}")
        _positive("rounds", self.rounds)
        _positive("clients", self.clients)
        _positive("dirichlet_alpha", self.dirichlet_alpha)
        bad = [m for m in self.modes if m not in MODES]
        if bad or not self.modes:
            raise ConfigError(f"modes must be a non-empty subset of {list(MODES)}, got {self.modes}")
        if self.round.min_clients > self.clients:
            raise ConfigError(f"round.min_clients={self.round.min_clients} > clients={self.clients}")
        if self.broker is not None and not self.broker.startswith("mqtt://"):
            raise ConfigError(f"broker must look like mqtt://host:port, got {self.broker!r}")

    @property
    def mode(self) -> str:
        return self.modes[0]

    @property
    def dp_enabled(self) -> bool:
        return "dp" in self.mode

    @property
    def he_enabled(self) -> bool:
        return "he" in self.mode

    @property
    def expected_clients(self) -> float:
        """m_expected: mean number of clients sampled per round."""
        return self.round.sample_rate * self.clients

    def for_mode(self, mode: str) -> FLConfig:
        """This config with DP/HE switched per ``mode`` (dp fields are ignored when off)."""
        return dataclasses.replace(self, modes=[mode], federation=f"{self.federation}-{mode.replace('+', '-')}")


def _positive(name: str, v: float) -> None:
    if isinstance(v, bool) or not isinstance(v, int | float) or v <= 0:
        raise ConfigError(f"{name} must be a positive number, got {v!r}")


def _build(cls: type, data: Any, where: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{where or 'config'}: unknown key(s) {unknown}; allowed: {sorted(names)}")
    kwargs = {}
    for k, v in data.items():
        key = f"{where}.{k}" if where else k
        kwargs[k] = _coerce(hints[k], v, key)
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where or 'config'}: {e}") from e


def _coerce(tp: Any, v: Any, key: str) -> Any:
    if dataclasses.is_dataclass(tp):
        return _build(tp, v, key)  # type: ignore[arg-type]
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if v is None and type(None) in args:
            return None
        errs = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(a, v, key)
            except ConfigError as e:
                errs.append(str(e))
        raise ConfigError(errs[0] if errs else f"{key}: bad value {v!r}")
    if origin is Literal:
        if v not in args:
            raise ConfigError(f"{key}: must be one of {list(args)}, got {v!r}")
        return v
    if origin is list:
        if not isinstance(v, list):
            raise ConfigError(f"{key}: expected a list, got {v!r}")
        return [_coerce(args[0], x, f"{key}[{i}]") for i, x in enumerate(v)]
    if tp is float:
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise ConfigError(f"{key}: expected a number, got {v!r}")
        return float(v)
    if tp is int:
        if isinstance(v, bool) or not isinstance(v, int):
            raise ConfigError(f"{key}: expected an integer, got {v!r}")
        return v
    if tp is bool:
        if not isinstance(v, bool):
            raise ConfigError(f"{key}: expected true/false, got {v!r}")
        return v
    if tp is str:
        if not isinstance(v, str):
            raise ConfigError(f"{key}: expected a string, got {v!r}")
        return v
    raise ConfigError(f"{key}: unsupported type {tp}")  # pragma: no cover


def config_from_dict(data: Any) -> FLConfig:
    return typing.cast(FLConfig, _build(FLConfig, data if data is not None else {}, ""))


def config_to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def shipped_configs() -> list[Path]:
    """The example configs that ship as package data (``collab/fl/example_*.yaml``)."""
    return sorted(Path(__file__).resolve().parent.glob("example_*.yaml"))


def resolve_config(path: str | Path) -> Path:
    """A config file, or the name of a shipped example (``example_digits``), so the
    examples work from an installed wheel as well as from the source tree."""
    p = Path(path)
    if p.is_file():
        return p
    for shipped in shipped_configs():
        if p.name in (shipped.name, shipped.stem):
            return shipped
    return p


def load_config(path: str | Path) -> FLConfig:
    p = resolve_config(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise ConfigError(f"cannot read config {p}: {e}") from e
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: not valid YAML: {e}") from e
    try:
        return config_from_dict(data)
    except ConfigError as e:
        raise ConfigError(f"{p}: {e}") from e
