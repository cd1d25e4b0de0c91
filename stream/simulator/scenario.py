"""Scenario files: which teachers answer, how accurately, and what drifts when.

A scenario is TOML. Top level: ``name``, ``samples``, ``start`` (RFC 3339), ``interval_s``;
a ``[task]`` table (label prior, how often the case text states the change outright);
``[[teachers]]`` (name, version, writing ``profile``, per-finding ``accuracy``, optional
``verbosity``, ``refusal_rate``, ``format``, and what it says when wrong: one fixed
``wrong_label`` or a ``confusion`` matrix, true label -> weights of the wrong labels);
``[[blocs]]`` (teachers whose errors fall on the same cases with the same wrong draw, from
sample ``at``, on a share ``strength`` of the findings); ``[[drift]]`` events (``teacher``,
``at`` = sample index, ``kind``, ``params``, optional ``over`` = ramp length in samples).

Validation names the bad field as a dotted path, so a typo fails at start with a message:

>>> bad = {"samples": 10, "teachers": [{"name": "a", "version": "v", "profile": "terse",
...        "accuracy": {f: 0.5 for f in FINDINGS}}],
...        "drift": [{"teacher": "a", "at": 5, "kind": "refusal", "params": {"rate": 2}}]}
>>> try:
...     scenario_from_dict(bad, name="x")
... except ScenarioInvalid as exc:
...     print(exc.field)
drift[0].params.rate
"""

from __future__ import annotations

import tomllib
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from stream.exceptions import ScenarioInvalid
from stream.simulator.case import FINDINGS, LABELS
from stream.simulator.profiles import PROFILES
from stream.simulator.trajectory import FORMATS

DRIFT_KINDS = ("accuracy", "verbosity", "refusal", "format", "version_swap")

Finding = Literal["consolidation", "pleural_effusion", "pneumonia", "pneumothorax", "edema"]
Label = Literal["improving", "stable", "worsening"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_profile(value: str) -> str:
    if value not in PROFILES:
        raise ValueError(f"unknown profile {value!r}; known: {', '.join(sorted(PROFILES))}")
    return value


def _check_format(value: str) -> str:
    if value not in FORMATS:
        raise ValueError(f"unknown format {value!r}; known: {', '.join(FORMATS)}")
    return value


class Accuracy(_Model):
    """Top-1 accuracy per finding, each in [0, 1]; all five are required."""

    consolidation: float = Field(ge=0, le=1)
    pleural_effusion: float = Field(ge=0, le=1)
    pneumonia: float = Field(ge=0, le=1)
    pneumothorax: float = Field(ge=0, le=1)
    edema: float = Field(ge=0, le=1)

    def as_dict(self) -> dict[str, float]:
        return {f: getattr(self, f) for f in FINDINGS}


Confusion = dict[Label, dict[Label, float]]


def _check_confusion(value: Confusion | None) -> Confusion | None:
    """Each row (a true label) weighs the labels said instead of it: >= 0, positive sum,
    and the true label itself is not among them (accuracy decides when it is said)."""
    for truth, row in (value or {}).items():
        if truth in row:
            raise ValueError(f"row {truth!r} may not weigh {truth!r} itself (accuracy does)")
        if any(w < 0 for w in row.values()) or sum(row.values()) <= 0:
            raise ValueError(f"row {truth!r}: weights must be >= 0 with a positive sum")
    return value


class TeacherSpec(_Model):
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._\-]+$")
    version: str = Field(min_length=1)
    profile: str
    accuracy: Accuracy
    verbosity: float = Field(1.0, gt=0, le=20)
    refusal_rate: float = Field(0.0, ge=0, le=1)
    format: str = "final_line"
    wrong_label: Label | None = None
    confusion: Confusion | None = None

    _profile = field_validator("profile")(_check_profile)
    _format = field_validator("format")(_check_format)
    _confusion = field_validator("confusion")(_check_confusion)


class BlocSpec(_Model):
    """Teachers whose errors are correlated: from sample ``at``, on each (case, finding)
    with probability ``strength`` the members share one correctness coin and one wrong-label
    draw, so the less accurate members are wrong whenever a more accurate one is, and say
    the same wrong label where their confusion rows agree."""

    name: str = Field(min_length=1)
    teachers: list[str] = Field(min_length=2)
    at: int = Field(0, ge=0)
    strength: float = Field(1.0, ge=0, le=1)


_DEFAULT_PRIOR: dict[Label, float] = {"improving": 0.3, "stable": 0.4, "worsening": 0.3}


class TaskSpec(_Model):
    label_prior: dict[Label, float] = Field(
        default_factory=lambda: dict(_DEFAULT_PRIOR))
    cue_rate: float = Field(1.0, ge=0, le=1, description="P(case text names the change)")

    @field_validator("label_prior")
    @classmethod
    def _prior(cls, value: dict[Label, float]) -> dict[Label, float]:
        if any(v < 0 for v in value.values()) or sum(value.values()) <= 0:
            raise ValueError("weights must be >= 0 with a positive sum")
        return value

    def prior_weights(self) -> list[float]:
        prior = {str(label): weight for label, weight in self.label_prior.items()}
        return [prior.get(label, 0.0) for label in LABELS]


# --- drift parameters, one model per kind -------------------------------------------------

class AccuracyParams(_Model):
    """Set (``accuracy``) or shift (``delta``) one finding's accuracy, or ``all`` of them."""

    finding: Finding | Literal["all"] = "all"
    accuracy: float | None = Field(None, ge=0, le=1)
    delta: float | None = Field(None, ge=-1, le=1)
    wrong_label: Label | None = None
    confusion: Confusion | None = None

    _confusion = field_validator("confusion")(_check_confusion)

    @model_validator(mode="after")
    def _one_of(self) -> AccuracyParams:
        if (self.accuracy is None) == (self.delta is None):
            raise ValueError("give exactly one of 'accuracy' or 'delta'")
        return self


class VerbosityParams(_Model):
    factor: float = Field(gt=0, le=20)


class RefusalParams(_Model):
    rate: float = Field(ge=0, le=1)


class FormatParams(_Model):
    format: str

    _format = field_validator("format")(_check_format)


class VersionSwapParams(_Model):
    profile: str
    version: str = Field(min_length=1)
    accuracy: dict[Finding, float] = Field(default_factory=dict)

    _profile = field_validator("profile")(_check_profile)

    @field_validator("accuracy")
    @classmethod
    def _acc(cls, value: dict[str, float]) -> dict[str, float]:
        if any(not 0 <= v <= 1 for v in value.values()):
            raise ValueError("accuracies must lie in [0, 1]")
        return value


PARAMS: dict[str, type[BaseModel]] = {
    "accuracy": AccuracyParams, "verbosity": VerbosityParams, "refusal": RefusalParams,
    "format": FormatParams, "version_swap": VersionSwapParams}
RAMPABLE = ("accuracy", "verbosity", "refusal")


class DriftSpec(_Model):
    teacher: str
    at: int = Field(ge=0, description="sample index where the drift starts")
    kind: Literal["accuracy", "verbosity", "refusal", "format", "version_swap"]
    params: dict[str, Any] = Field(default_factory=dict)
    over: int = Field(0, ge=0, description="ramp length in samples (0 = abrupt)")

    def typed_params(self) -> BaseModel:
        return PARAMS[self.kind].model_validate(self.params)


class Scenario(_Model):
    """A validated scenario. Build with :func:`load_scenario` or :func:`scenario_from_dict`."""

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9._\-]+$")
    description: str = ""
    samples: int = Field(gt=0, le=10_000_000)
    start: datetime = datetime(2026, 1, 1, tzinfo=UTC)
    interval_s: float = Field(60.0, ge=2, description="seconds between samples")
    task: TaskSpec = TaskSpec()
    teachers: list[TeacherSpec] = Field(min_length=1)
    drift: list[DriftSpec] = Field(default_factory=list)
    blocs: list[BlocSpec] = Field(default_factory=list)

    @field_validator("start")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        return value if value.tzinfo else value.replace(tzinfo=UTC)

    def teacher(self, name: str) -> TeacherSpec:
        return next(t for t in self.teachers if t.name == name)

    def with_samples(self, samples: int) -> Scenario:
        """The same scenario cut (or extended) to ``samples``; later drifts simply never fire."""
        if samples <= 0:
            raise ScenarioInvalid("samples", "must be > 0")
        return self.model_copy(update={"samples": samples})


def _dotted(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _raise_first(exc: ValidationError, prefix: str = "") -> None:
    errors = exc.errors()
    msgs = [f"{_dotted(e['loc'])}: {e['msg']}" for e in errors]
    field = _dotted(errors[0]["loc"]) if errors else ""
    if prefix:
        field = f"{prefix}.{field}" if field else prefix
        msgs = [f"{prefix}.{m}" if not m.startswith(":") else f"{prefix}{m}" for m in msgs]
    raise ScenarioInvalid(field, "; ".join(msgs)) from None


def scenario_from_dict(data: dict[str, Any], name: str | None = None) -> Scenario:
    """Validate a decoded scenario; raises :class:`ScenarioInvalid` naming the field."""
    data = dict(data)
    if name is not None:
        data.setdefault("name", name)
    try:
        scenario = Scenario.model_validate(data)
    except ValidationError as exc:
        _raise_first(exc)
    names = [t.name for t in scenario.teachers]
    for i, t in enumerate(names):
        if t in names[:i]:
            raise ScenarioInvalid(f"teachers[{i}].name", f"duplicate teacher {t!r}")
    in_bloc: set[str] = set()
    for i, b in enumerate(scenario.blocs):
        for t in b.teachers:
            if t not in names:
                raise ScenarioInvalid(f"blocs[{i}].teachers", f"unknown teacher {t!r}")
            if t in in_bloc:
                raise ScenarioInvalid(f"blocs[{i}].teachers", f"{t!r} is in two blocs")
            in_bloc.add(t)
    for i, d in enumerate(scenario.drift):
        if d.teacher not in names:
            raise ScenarioInvalid(f"drift[{i}].teacher", f"unknown teacher {d.teacher!r}")
        if d.at >= scenario.samples:
            raise ScenarioInvalid(f"drift[{i}].at",
                                  f"{d.at} is not below samples={scenario.samples}")
        if d.over and d.kind not in RAMPABLE:
            raise ScenarioInvalid(f"drift[{i}].over", f"kind {d.kind!r} cannot ramp")
        try:
            d.typed_params()
        except ValidationError as exc:
            _raise_first(exc, prefix=f"drift[{i}].params")
    return scenario


def packaged_scenarios() -> list[str]:
    """Names of the scenarios shipped in ``stream/scenarios``."""
    folder = resources.files("stream") / "scenarios"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".toml"))


def load_scenario(path_or_name: str | Path) -> Scenario:
    """A packaged scenario by name (``default``, ``paper_nodrift``, ``harsh``) or a TOML file."""
    text, name = _read(path_or_name)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioInvalid("<toml>", f"not valid TOML: {exc}") from None
    return scenario_from_dict(data, name=name)


def _read(path_or_name: str | Path) -> tuple[str, str]:
    as_str = str(path_or_name)
    if as_str in packaged_scenarios():
        resource = resources.files("stream") / "scenarios" / f"{as_str}.toml"
        return resource.read_text(encoding="utf-8"), as_str
    path = Path(path_or_name)
    if not path.is_file():
        known = ", ".join(packaged_scenarios())
        raise ScenarioInvalid("<file>", f"no such file or packaged scenario: {as_str} "
                                        f"(packaged: {known})")
    return path.read_text(encoding="utf-8"), path.name.removesuffix(".toml")
