"""Scenario files: the dataclasses and a strict YAML loader.

Every problem in a file (unknown key, wrong type, negative bandwidth, missing or malformed
trace file, unknown policy) is reported as ONE :class:`ConfigError` naming the file, the
field path and its line, before anything starts. The schema is documented in
``docs/scenarios.md``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from cloud_node.config import CloudConfig
from collab.decision import parse_policy
from collab.edge.config import ClientConfig
from collab.emulator.traces import DirectionTrace, LinkTrace, MahimahiTrace, Segment, load_mahimahi
from collab.errors import CodecError, ConfigError
from collab.settings import Setting, settings, to_argv

ACTIONS = ("kill_cloud", "start_cloud", "cut_link", "restore_link")


@dataclass(frozen=True, kw_only=True)
class ModelSpec:
    example: str | None = None  # built-in example model (collab.models.registry)
    bundle: Path | None = None  # or a bundle directory
    calibrate: bool = True  # measure the codec table on the workload's inputs (cached)
    codecs: tuple[str, ...] = ("f32+zstd1", "f16+zstd1", "int8+zstd1", "int4+zstd1")
    calibration_inputs: int = 48


@dataclass(frozen=True, kw_only=True)
class EdgeSpec:
    """``edges:``: ``count`` plus any :class:`ClientConfig` field by name, except those the
    runner sets per run (:data:`RUNNER_EDGE`); unset ones keep ClientConfig's defaults."""

    count: int = 1  # edge clients sharing the cloud node (and the emulated link)
    client: ClientConfig = field(default_factory=ClientConfig)


@dataclass(frozen=True, kw_only=True)
class CloudSpec:
    """``cloud:``: any :class:`CloudConfig` field by name, except those the runner sets
    (:data:`RUNNER_CLOUD`); the node process gets them as its flags, so unset ones keep
    CloudConfig's defaults."""

    settings: Mapping[str, Any] = field(default_factory=dict)

    def argv(self) -> list[str]:
        return to_argv(settings(CloudConfig), self.settings)


#: ClientConfig fields the runner sets for every run (the cloud is the emulator's
#: address, the policy the one being replayed, the deadline the workload's, and the
#: sessions are warmed before the run starts)
RUNNER_EDGE = ("cloud", "policy", "deadline_ms", "warm")
#: CloudConfig fields the runner sets: it starts the node on loopback and stops it
RUNNER_CLOUD = ("listen", "metrics_port", "tls_cert", "tls_key", "tls_client_ca", "grace_s")


@dataclass(frozen=True, kw_only=True)
class Workload:
    requests: int = 40  # per edge and policy
    rate_hz: float = 4.0  # per edge
    arrivals: str = "uniform"  # uniform | poisson
    deadline_ms: float | None = None
    input_noise: float = 0.0  # std of Gaussian sensor noise added to the dataset inputs

    @property
    def duration_s(self) -> float:
        return self.requests / self.rate_hz


@dataclass(frozen=True, kw_only=True)
class Event:
    at_s: float
    action: str
    duration_s: float | None = None  # cut_link: restore after this long


@dataclass(frozen=True, kw_only=True)
class Scenario:
    name: str
    description: str
    path: Path | None
    seed: int
    model: ModelSpec
    edge: EdgeSpec
    cloud: CloudSpec
    workload: Workload
    link: LinkTrace
    events: tuple[Event, ...]
    policies: tuple[str, ...]

    @property
    def duration_s(self) -> float:
        return self.workload.duration_s


# ------------------------------------------------------------------------------------------
class _Doc:
    """Plain data plus the YAML node tree, so errors can name the line of any field."""

    def __init__(self, text: str, source: str) -> None:
        self.source = source
        try:
            self.node = yaml.compose(text, Loader=yaml.SafeLoader)
            self.data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f":{mark.line + 1}" if mark is not None else ""
            raise ConfigError(f"{source}{where}: invalid YAML: {getattr(e, 'problem', e)}") from None

    def line(self, path: tuple[str | int, ...]) -> int | None:
        node = self.node
        best = node.start_mark.line + 1 if node is not None else None
        for key in path:
            if isinstance(node, yaml.MappingNode):
                nxt = None
                for k, v in node.value:
                    if k.value == key:
                        best, nxt = k.start_mark.line + 1, v
                        break
                node = nxt
            elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
                node = node.value[key]
                best = node.start_mark.line + 1
            else:
                break
            if node is None:
                break
        return best

    def error(self, path: tuple[str | int, ...], msg: str) -> ConfigError:
        field = "".join(f"[{p}]" if isinstance(p, int) else (f".{p}" if i else p) for i, p in enumerate(path))
        line = self.line(path)
        where = f"{self.source}:{line}" if line else self.source
        return ConfigError(f"{where}: {field or '<top>'}: {msg}")


class _Fields:
    """Typed, range-checked access to one mapping; unknown keys are an error."""

    def __init__(self, doc: _Doc, path: tuple[str | int, ...], value: Any, allowed: tuple[str, ...]) -> None:
        if value is None:
            value = {}
        if not isinstance(value, Mapping):
            raise doc.error(path, f"must be a mapping, got {type(value).__name__}")
        self.doc, self.path, self.m = doc, path, value
        for k in value:
            if k not in allowed:
                raise doc.error((*path, k), f"unknown key {k!r} (allowed: {', '.join(allowed)})")

    def err(self, key: str | int, msg: str) -> ConfigError:
        return self.doc.error((*self.path, key), msg)

    def num(self, key: str, default: float | None, *, lo: float | None = None, lo_open: bool = False,
            hi: float | None = None, required: bool = False, integer: bool = False) -> Any:
        if key not in self.m or self.m[key] is None:
            if required:
                raise self.err(key, "is required")
            return default
        v = self.m[key]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or (integer and not isinstance(v, int)):
            raise self.err(key, f"must be {'an integer' if integer else 'a number'}, got {v!r}")
        if not math.isfinite(v):
            raise self.err(key, f"must be finite, got {v!r}")
        if lo is not None and (v <= lo if lo_open else v < lo):
            raise self.err(key, f"must be {'>' if lo_open else '>='} {lo}, got {v}")
        if hi is not None and v > hi:
            raise self.err(key, f"must be <= {hi}, got {v}")
        return v

    def text(self, key: str, default: str | None, *, choices: tuple[str, ...] | None = None,
             required: bool = False) -> Any:
        if key not in self.m or self.m[key] is None:
            if required:
                raise self.err(key, "is required")
            return default
        v = self.m[key]
        if not isinstance(v, str):
            raise self.err(key, f"must be a string, got {v!r}")
        if choices is not None and v not in choices:
            raise self.err(key, f"must be one of {', '.join(choices)}, got {v!r}")
        return v

    def flag(self, key: str, default: bool) -> bool:
        v = self.m.get(key, default)
        if not isinstance(v, bool):
            raise self.err(key, f"must be true or false, got {v!r}")
        return v

    def seq(self, key: str) -> list[Any]:
        v = self.m.get(key)
        if v is None:
            return []
        if not isinstance(v, list):
            raise self.err(key, f"must be a list, got {type(v).__name__}")
        return v


def _model(doc: _Doc, raw: Any, base: Path) -> ModelSpec:
    f = _Fields(doc, ("model",), raw, ("example", "bundle", "calibrate", "codecs", "calibration_inputs"))
    example, bundle = f.text("example", None), f.text("bundle", None)
    if (example is None) == (bundle is None):
        raise doc.error(("model",), "give exactly one of 'example' (built-in model) or 'bundle' (directory)")
    if example is not None:
        from collab.models.registry import EXAMPLES

        if example not in EXAMPLES:
            raise f.err("example", f"unknown example model {example!r} (known: {', '.join(EXAMPLES)})")
    bpath = None
    if bundle is not None:
        bpath = (base / bundle).resolve()
        if not (bpath / "manifest.json").is_file():
            raise f.err("bundle", f"no bundle at {bpath} (manifest.json missing)")
    codecs = tuple(f.seq("codecs")) or ModelSpec().codecs
    from collab.codec import Codec

    for i, c in enumerate(codecs):
        try:
            Codec.parse(str(c))
        except Exception as e:
            raise doc.error(("model", "codecs", i), f"bad codec {c!r}: {e}") from None
    return ModelSpec(example=example, bundle=bpath, calibrate=f.flag("calibrate", True), codecs=codecs,
                     calibration_inputs=f.num("calibration_inputs", 48, lo=1, integer=True))


def _segments(doc: _Doc, raw: list[Any], mahimahi: dict[str, MahimahiTrace | None]) -> tuple[
        tuple[Segment, ...], tuple[Segment, ...]]:
    up: list[Segment] = []
    down: list[Segment] = []
    keys = ("duration_s", "up_mbps", "down_mbps", "rtt_ms", "jitter_ms", "loss", "outage")
    for i, s in enumerate(raw):
        f = _Fields(doc, ("network", "segments", i), s, keys)
        dur = f.num("duration_s", None, lo=0, lo_open=True, required=True)
        outage = f.flag("outage", False)
        rates: dict[str, float | None] = {}
        for d in ("up", "down"):
            mb = f.num(f"{d}_mbps", None, lo=0)
            if mb is not None and mahimahi.get(d) is not None:
                raise f.err(f"{d}_mbps", f"the {d}link bandwidth comes from network.mahimahi.{d}; drop this key")
            if mb is None and mahimahi.get(d) is None and not outage:
                raise f.err(f"{d}_mbps", "is required (or give network.mahimahi)")
            rates[d] = None if mb is None else mb * 1e6
        rtt = f.num("rtt_ms", 0.0, lo=0)
        jitter = f.num("jitter_ms", 0.0, lo=0)
        loss = f.num("loss", 0.0, lo=0, hi=0.5)
        for d, out in (("up", up), ("down", down)):
            out.append(Segment(duration_s=dur, bandwidth_bps=0.0 if outage and rates[d] is None and
                               mahimahi.get(d) is None else rates[d], delay_ms=rtt / 2,
                               jitter_ms=jitter / 2, loss=loss, outage=outage))
    return tuple(up), tuple(down)


def _network(doc: _Doc, raw: Any, base: Path) -> LinkTrace:
    f = _Fields(doc, ("network",), raw, ("segments", "mahimahi", "repeat"))
    mm: dict[str, MahimahiTrace | None] = {"up": None, "down": None}
    if "mahimahi" in f.m:
        g = _Fields(doc, ("network", "mahimahi"), f.m["mahimahi"], ("up", "down"))
        for d in ("up", "down"):
            p = g.text(d, None)
            if p is not None:
                path = (base / p).resolve()
                if not path.is_file():
                    raise g.err(d, f"trace file not found: {path}")
                try:
                    mm[d] = load_mahimahi(path)
                except ConfigError as e:
                    raise g.err(d, str(e)) from None
    segs = f.seq("segments")
    if not segs:
        raise f.err("segments", "at least one segment is required")
    up, down = _segments(doc, segs, mm)
    repeat = f.flag("repeat", True)
    return LinkTrace(uplink=DirectionTrace(segments=up, repeat=repeat, mahimahi=mm["up"]),
                     downlink=DirectionTrace(segments=down, repeat=repeat, mahimahi=mm["down"]))


def _events(doc: _Doc, raw: list[Any], duration: float) -> tuple[Event, ...]:
    out = []
    for i, e in enumerate(raw):
        f = _Fields(doc, ("events", i), e, ("at_s", "action", "duration_s"))
        at = f.num("at_s", None, lo=0, required=True)
        if at > duration:
            raise f.err("at_s", f"is after the end of the workload ({duration:.1f} s)")
        action = f.text("action", None, choices=ACTIONS, required=True)
        dur = f.num("duration_s", None, lo=0, lo_open=True)
        if dur is not None and action != "cut_link":
            raise f.err("duration_s", "only cut_link takes a duration")
        out.append(Event(at_s=float(at), action=action, duration_s=dur))
    return tuple(sorted(out, key=lambda e: e.at_s))


def _settings(doc: _Doc, path: tuple[str, ...], raw: Any, known: Sequence[Setting],
              extra: tuple[str, ...]) -> tuple[_Fields, dict[str, Any]]:
    """A section whose keys are config fields (plus ``extra``): the values given, checked
    against the field's type and bounds."""
    f = _Fields(doc, path, raw, (*extra, *(s.name for s in known)))
    values: dict[str, Any] = {}
    for s in known:
        if f.m.get(s.name) is None:
            continue
        if s.kind is bool:
            values[s.name] = f.flag(s.name, s.default)
        elif s.kind in (int, float):
            values[s.name] = f.num(s.name, s.default, lo=s.lo, hi=s.hi, lo_open=s.lo_open, integer=s.kind is int)
        else:
            text = f.text(s.name, s.default)
            values[s.name] = Path(text) if s.kind is Path else text
    return f, values


_TOP = ("name", "description", "seed", "model", "edges", "cloud", "workload", "network", "events", "policies")


def parse_scenario(text: str, *, source: str = "<scenario>", base: Path | None = None) -> Scenario:
    doc = _Doc(text, source)
    base = base or Path.cwd()
    top = _Fields(doc, (), doc.data, _TOP)
    model = _model(doc, top.m.get("model"), base)
    e, values = _settings(doc, ("edges",), top.m.get("edges"), settings(ClientConfig, skip=RUNNER_EDGE),
                          ("count",))
    try:
        client = ClientConfig(**values)
    except (ConfigError, CodecError) as err:
        raise doc.error(("edges",), str(err)) from None
    edge = EdgeSpec(count=e.num("count", 1, lo=1, hi=64, integer=True), client=client)
    _, values = _settings(doc, ("cloud",), top.m.get("cloud"), settings(CloudConfig, skip=RUNNER_CLOUD), ())
    cloud = CloudSpec(settings=values)
    w = _Fields(doc, ("workload",), top.m.get("workload"), (
        "requests", "rate_hz", "arrivals", "deadline_ms", "input_noise"))
    workload = Workload(requests=w.num("requests", 40, lo=1, integer=True),
                        rate_hz=w.num("rate_hz", 4.0, lo=0, lo_open=True),
                        arrivals=w.text("arrivals", "uniform", choices=("uniform", "poisson")),
                        deadline_ms=w.num("deadline_ms", None, lo=0, lo_open=True),
                        input_noise=w.num("input_noise", 0.0, lo=0))
    if "network" not in top.m:
        raise doc.error(("network",), "is required")
    link = _network(doc, top.m["network"], base)
    events = _events(doc, top.seq("events"), workload.duration_s)
    policies = tuple(top.seq("policies")) or ("edge_only", "cloud_only", "auto")
    for i, p in enumerate(policies):
        try:
            parse_policy(str(p))
        except ConfigError as err:
            raise doc.error(("policies", i), str(err)) from None
    if len(set(policies)) != len(policies):
        raise doc.error(("policies",), "lists a policy twice")
    name = top.text("name", None) or (Path(source).stem if source != "<scenario>" else "scenario")
    return Scenario(name=name, description=top.text("description", "") or "", path=None,
                    seed=top.num("seed", 0, integer=True, lo=0), model=model, edge=edge, cloud=cloud,
                    workload=workload, link=link, events=events, policies=tuple(str(p) for p in policies))


def load_scenario(path: str | Path) -> Scenario:
    p = Path(path)
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise ConfigError(f"scenario file not found: {p}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read scenario file {p}: {e}") from e
    sc = parse_scenario(text, source=str(p), base=p.resolve().parent)
    from dataclasses import replace

    return replace(sc, path=p.resolve())


def check_split_policies(sc: Scenario, split_names: list[str], fail: Callable[[str], ConfigError]) -> None:
    """Forced split policies must name split points of the bundle (checked once it is loaded)."""
    for p in sc.policies:
        if p.startswith("split:") and p[6:] not in split_names:
            raise fail(f"policy {p!r}: unknown split point (known: {', '.join(split_names)})")
