"""FL configuration: keyword-only frozen dataclasses, loaded strictly from YAML.

Everything is validated here (pydantic, through collab.yamlcfg) so a malformed file fails
with ConfigError naming file, field and line before any process, broker or key is created.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, StrictBool, StrictFloat, StrictInt, StrictStr

from collab.files import read_text
from collab.yamlcfg import FieldError, config_dataclass, load_yaml, validate

Mode = Literal["plain", "dp", "he", "dp+he"]
MODES: tuple[str, ...] = typing.get_args(Mode)
#: models collab.fl.model can build (kept here so validating a config never imports torch)
ModelName = Literal["digits_cnn", "digits_mlp_1m"]
MODEL_NAMES: tuple[str, ...] = typing.get_args(ModelName)

# numbers as YAML writes them: an integer is also a number, true/false is neither
Positive = Annotated[StrictFloat, Field(gt=0)]
PositiveInt = Annotated[StrictInt, Field(gt=0)]
Fraction = Annotated[StrictFloat, Field(ge=0, lt=1)]  # in [0, 1)

#: the label every output of an insecure deterministic run carries (collab.fl.randomness).
NO_PRIVACY_GUARANTEE = "no privacy guarantee (insecure deterministic run)"


def _ckks_degree(n: int) -> int:
    if n not in (2048, 4096, 8192, 16384, 32768):
        raise ValueError(f"must be a power of two in 2048..32768, got {n}")
    return n


@config_dataclass
class HEParams:
    """CKKS parameters of one federation (all members must use the same)."""

    poly_modulus_degree: Annotated[StrictInt, AfterValidator(_ckks_degree)] = 8192
    coeff_mod_bit_sizes: Annotated[
        tuple[Annotated[StrictInt, Field(ge=20, le=60)], ...], Field(min_length=2)
    ] = (60, 40)
    scale_bits: Annotated[StrictInt, Field(ge=20)] = 40
    #: "symmetric": members encrypt with the secret key they hold anyway (half the CPU of
    #: public-key encryption) and the aggregator's context carries NO key at all (it can
    #: still add plaintexts: CKKS gives no integrity). "public_key": it gets the public key.
    encryption: Literal["symmetric", "public_key"] = "symmetric"

    def __post_init__(self) -> None:
        if self.scale_bits >= self.coeff_mod_bit_sizes[0]:
            raise FieldError(
                "scale_bits",
                f"must be < the first prime's {self.coeff_mod_bit_sizes[0]} "
                f"bits, got {self.scale_bits}",
            )

    @property
    def slots(self) -> int:
        return self.poly_modulus_degree // 2


@config_dataclass
class ModelConfig:
    name: ModelName = "digits_cnn"
    #: "all" or module-name prefixes (e.g. ["classifier"]) whose parameters are federated.
    federated: Literal["all"] | Annotated[list[StrictStr], Field(min_length=1)] = "all"


@config_dataclass
class LocalTrainingConfig:
    local_epochs: PositiveInt = 1
    batch_size: PositiveInt = 32
    lr: Positive = 0.05
    momentum: Fraction = 0.0
    prox_mu: Annotated[StrictFloat, Field(ge=0)] = 0.0


@config_dataclass
class ServerConfig:
    optimizer: Literal["fedavg", "fedadam"] = "fedavg"
    lr: Positive = 1.0
    beta1: StrictFloat = 0.9
    beta2: StrictFloat = 0.99
    tau: StrictFloat = 1e-3


@config_dataclass
class RoundConfig:
    #: Poisson sampling rate of clients per round, in (0, 1]. The sample is announced, so
    #: the accountant claims no amplification from it (collab.fl.accountant).
    sample_rate: Annotated[StrictFloat, Field(gt=0, le=1)] = 1.0
    #: aggregate at the deadline only if at least this many sampled clients reported.
    min_clients: PositiveInt = 2
    deadline_s: Positive = 60.0


@config_dataclass
class DPConfig:
    clip: Positive = 1.0
    noise_multiplier: Positive = 1.0
    delta: Annotated[StrictFloat, Field(gt=0, lt=1)] = 1e-5
    epsilon_budget: Positive | None = None
    #: DP weights are min(1, n_k / weight_cap) (bounded sensitivity); None = uniform.
    weight_cap: Positive | None = None
    #: reporters assumed to collude with the aggregator (their noise shares are known).
    assumed_colluders: Annotated[StrictInt, Field(ge=0)] = 0


@config_dataclass
class HEConfig(HEParams):
    """The ``he:`` section: the federation's CKKS parameters, and the packing of updates
    (collab.fl.pack): quantized, several values per slot, fewer ciphertexts."""

    #: pack quantized updates (k b-bit values per CKKS slot; members dequantize the sum)
    pack: StrictBool = False
    #: b, bits per quantized value; 0 = chosen from the client count and the precision
    pack_bits: Annotated[StrictInt, Field(ge=0, le=30)] = 0
    #: k, values per CKKS slot; 0 = chosen from the client count and the precision
    pack_per_slot: Annotated[StrictInt, Field(ge=0, le=16)] = 0
    #: per-coordinate clip of a client's update before quantization (units of the local
    #: model delta; in plain mode scaled by the largest sampled example count)
    pack_clip: Positive = 0.5

    def params(self) -> HEParams:
        return HEParams(**{f.name: getattr(self, f.name) for f in dataclasses.fields(HEParams)})


@config_dataclass
class PublicConfig:
    """Public pretraining: a stratified share of the digits TRAINING split is declared
    public, never given to any client, and used to pretrain the whole model before the
    federation starts (the federated modules then fine-tune under DP). The test split is
    untouched. ``fraction: 0`` (default) = no public data, seeded random init."""

    fraction: Fraction = 0.0
    epochs: PositiveInt = 40
    batch_size: PositiveInt = 32
    lr: Positive = 0.05
    momentum: Fraction = 0.9
    #: add shifted copies (±1 pixel) of every public image: more public data at no privacy cost.
    augment: StrictBool = True
    #: start the FEDERATED modules from the seeded random init instead of the public
    #: model's values (the federation then learns them from private data alone).
    reset_federated: StrictBool = False

    @property
    def enabled(self) -> bool:
        return self.fraction > 0


@config_dataclass
class SimulateConfig:
    """Knobs of the local (simulated) federation only."""

    #: seconds a client waits between training and upload (a slow uplink).
    upload_delay_s: Annotated[StrictFloat, Field(ge=0)] = 0.0
    #: evaluate the global model on the test set after every round (key holder side).
    evaluate: StrictBool = True


@config_dataclass
class FLConfig:
    #: one MQTT topic level
    federation: Annotated[StrictStr, Field(pattern=r"^[A-Za-z0-9_-]+$")] = "fl"
    seed: StrictInt = 0
    #: seed DP noise and client sampling from ``seed`` instead of the OS, for reproducible
    #: research runs: anyone with the config regenerates the noise, so NO privacy guarantee.
    insecure_deterministic: StrictBool = False
    rounds: PositiveInt = 20
    clients: PositiveInt = 10
    dirichlet_alpha: Positive = 0.5
    modes: Annotated[list[Mode], Field(min_length=1)] = field(default_factory=lambda: ["plain"])
    broker: Annotated[StrictStr, Field(pattern=r"^mqtt://")] | None = None  # mqtt://host:port
    out: StrictStr = "fl-out"
    model: ModelConfig = field(default_factory=ModelConfig)
    train: LocalTrainingConfig = field(default_factory=LocalTrainingConfig)
    server: ServerConfig = field(default_factory=ServerConfig)
    round: RoundConfig = field(default_factory=RoundConfig)
    dp: DPConfig = field(default_factory=DPConfig)
    he: HEConfig = field(default_factory=HEConfig)
    public: PublicConfig = field(default_factory=PublicConfig)
    simulate: SimulateConfig = field(default_factory=SimulateConfig)

    def __post_init__(self) -> None:
        if self.round.min_clients > self.clients:
            raise FieldError(
                "round.min_clients",
                f"must be <= clients ({self.clients}), got {self.round.min_clients}",
            )

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
    def privacy_note(self) -> str:
        """What outputs of this run must say about privacy ("" when nothing to add)."""
        return NO_PRIVACY_GUARANTEE if self.insecure_deterministic else ""

    @property
    def expected_clients(self) -> float:
        """m_expected: mean number of clients sampled per round."""
        return self.round.sample_rate * self.clients

    def for_mode(self, mode: str) -> FLConfig:
        """This config with DP/HE switched per ``mode`` (dp fields are ignored when off)."""
        return dataclasses.replace(
            self,
            modes=[typing.cast(Mode, mode)],
            federation=f"{self.federation}-{mode.replace('+', '-')}",
        )


def config_from_dict(data: Any) -> FLConfig:
    return validate(FLConfig, data if data is not None else {})


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
    data, lines = load_yaml(read_text(p, "config"), str(p))
    return validate(FLConfig, data if data is not None else {}, source=str(p), lines=lines)
