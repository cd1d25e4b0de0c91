"""One configuration: a TOML file, then ``DISTILL_<SECTION>__<FIELD>`` environment overrides,
then command-line flags, merged by pydantic-settings. Loading returns the config or a
:class:`ConfigInvalid` naming the field, so a typo fails at start with a message rather than
a traceback.

Secrets (the password-like keys of ``kafka.security``) are held as ``SecretStr``: they print
as ``**********`` and a config error names their field but never their value. Any
environment variable may instead be given as ``NAME_FILE`` holding a path, whose contents
(without the final newline) become the value, e.g.
``DISTILL_KAFKA__SECURITY__SASL_PLAIN_PASSWORD_FILE=/run/secrets/kafka-password``.

>>> cfg = load_config(None, env={}, overrides={"serve": {"checkpoint_every": 500}})
>>> cfg.serve.checkpoint_every, cfg.kafka.input_topic
(500, 'teacher-outputs')
>>> print(load_config(None, env={"DISTILL_SERVE__CHECKPOINT_EVERY": "-1"}))
invalid config: serve.checkpoint_every: Input should be greater than 0 (got '-1')
>>> print(load_config(None, env={}, overrides={"serve": {"chekpoint_every": 1}}))
invalid config: serve.chekpoint_every: Extra inputs are not permitted (got 1)
>>> cfg = load_config(None, env={"DISTILL_KAFKA__SECURITY__SASL_PLAIN_PASSWORD": "hunter2"})
>>> cfg.kafka.security["sasl_plain_password"]
SecretStr('**********')
>>> print(load_config(None, env={"DISTILL_KAFKA__SECURITY__SASL_PLAIN_PASSWORD": "hunter2",
...                              "DISTILL_KAFKA__PARTITIONS": "x"}))
invalid config: kafka.partitions: Input should be a valid integer, ... (got 'x')
>>> print(load_config(None, env={}, overrides={"kafka": {"security": {"ssl_password": 1}}}))
invalid config: kafka.security: Value error, ssl_password must be a string (got **********)
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
)
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    TomlConfigSettingsSource,
)

from detectors.bank import BankConfig
from distill.consensus import ReliabilityConfig
from distill.monitor import embeddings as emb
from stream.dedup import DEFAULT_WINDOW
from stream.events import DEFAULT_MAX_MESSAGE_BYTES
from stream.formats import Format
from stream.join import DEFAULT_MAX_OPEN, DEFAULT_TIMEOUT_S
from stream.roster import DEFAULT_MAX_TEACHERS

ENV_PREFIX = "DISTILL_"
ENV_NESTED_DELIMITER = "__"
FILE_SUFFIX = "_FILE"
# kafka.security keys whose values are secrets, under kafka-python's and librdkafka's names
SECRET_KEYS = frozenset({"sasl_plain_password", "ssl_password", "sasl_oauth_token",
                         "sasl.password", "ssl.key.password", "ssl.keystore.password",
                         "sasl.oauthbearer.client.secret"})
_REDACTED = "**********"


def _host_port(address: str) -> str:
    """``host:port``, ``[v6]:port`` or ``:port``, checked before anything starts."""
    _, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ValueError("expected host:port with a port in 0..65535")
    return address


Address = Annotated[str, AfterValidator(_host_port)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class KafkaConfig(_Section):
    bootstrap_servers: str | None = Field(
        None, description="Kafka bootstrap servers; empty starts the embedded Tansu broker")
    input_topic: str = Field("teacher-outputs", description="teacher-output events")
    dead_letter_topic: str = Field("teacher-outputs.dlq", description="rejected messages")
    alerts_topic: str = Field("drift-alerts", description="drift alerts (JSON)")
    groups_topic: str = Field("teacher-groups", description="completed teacher groups")
    partitions: int = Field(4, gt=0, description="partitions for topics the service creates")
    group_id: str = Field("distill-monitor", description="consumer group of `distill serve`")
    observations_topic: str | None = Field(
        None, description="internal: per-teacher observations from the ingest to the detect "
                          "stage; default <group_id>-observations")
    drift_state_topic: str | None = Field(
        None, description="compacted: each teacher's latest drift state, keyed by teacher; "
                          "default <group_id>-drift-state")
    observation_partitions: int = Field(
        1, gt=0, description="partitions of the observations topic: how many detect-stage "
                             "owners the teachers are spread over")
    session_timeout_ms: int = Field(6000, ge=1000)
    heartbeat_interval_ms: int = Field(2000, ge=100)
    security: dict[str, Any] = Field(
        default_factory=dict,
        description="TLS/SASL options under kafka-python's names (security_protocol, "
                    "sasl_mechanism, ...); dotted keys are librdkafka properties; "
                    "passwords are kept as SecretStr")
    client: Literal["kafka-python", "librdkafka"] = Field(
        "kafka-python",
        description="Kafka client of `distill serve`: kafka-python, or librdkafka "
                    "(confluent-kafka, faster; pip install 'drift-distill[librdkafka]')")

    @field_validator("security")
    @classmethod
    def _hide_secrets(cls, value: dict[str, Any]) -> dict[str, Any]:
        """Secret values become SecretStr, so no repr, log line or error shows them."""
        for key in SECRET_KEYS.intersection(value):
            if not isinstance(value[key], str | SecretStr):
                raise ValueError(f"{key} must be a string")
        return {k: SecretStr(v) if k in SECRET_KEYS and isinstance(v, str) else v
                for k, v in value.items()}


class ServeConfig(_Section):
    state_dir: Path = Field(Path("state"), description="checkpoints, archive, registry")
    max_message_bytes: int = Field(DEFAULT_MAX_MESSAGE_BYTES, gt=0)
    checkpoint_every: int = Field(5000, gt=0, description="events between checkpoints")
    checkpoint_interval_s: float = Field(5.0, gt=0, description="seconds between checkpoints")
    expected_teachers: list[str] = Field(
        default_factory=list, description="teachers a group waits for; empty = learned")
    group_timeout_s: float = Field(DEFAULT_TIMEOUT_S, gt=0,
                                   description="produced_at span before timeout")
    role: Literal["all", "ingest", "detect"] = Field(
        "all", description="stages this instance runs: ingest (decode, join, consensus, "
                           "groups), detect (per-teacher detectors, alerts) or both")
    join_buffer_max: int = Field(DEFAULT_MAX_OPEN, gt=0, description="open samples held at most")
    max_teachers: int = Field(
        DEFAULT_MAX_TEACHERS, gt=0, description="teachers tracked per partition (configured "
        "ones always); a new name past this is dead-lettered as teacher_overflow")
    allowed_lateness_s: float | None = Field(
        None, ge=0, description="an event older than the join watermark minus this is "
                                "dead-lettered as late, and the detectors run this much event "
                                "time behind the stream (canonical order); empty = "
                                "group_timeout_s")
    max_clock_skew_s: float = Field(
        300.0, ge=0, description="an event stamped further than this ahead of the wall clock "
                                 "is dead-lettered as future_timestamp")
    dedup_window: int = Field(DEFAULT_WINDOW, gt=0, description="event ids remembered at most")
    metrics_address: Address = Field("127.0.0.1:9108",
                                     description="host:port of /metrics, /healthz")
    offset_out_of_range: Literal["earliest", "latest", "fail"] = Field(
        "earliest", description="a checkpointed offset outside the partition's log (the "
                                "broker lost data): resume from the log's start, its end, or "
                                "stop; always logged, counted and shown on /healthz, status")
    stall_exit_s: float = Field(
        300.0, ge=0, description="exit non-zero (for the supervisor to restart) after this "
                                 "long with no partitions assigned or outputs not "
                                 "acknowledged; 0 = never (e.g. spare instances)")
    archive_segment_events: int = Field(50_000, gt=0)
    timeline_every: int = Field(
        500, gt=0, description="records between bank snapshots in timeline.jsonl (for reports)")
    log_format: Literal["text", "json"] = "text"
    image_roots: list[str] = Field(
        default_factory=list,
        description="directories (or object-store prefixes, s3://bucket/x) that event image "
                    "references must lie under; relative references resolve under the first; "
                    "the trainer reads the images under the same roots")

    @field_validator("expected_teachers", "image_roots", mode="before")
    @classmethod
    def _comma_list(cls, value: Any) -> Any:
        """``DISTILL_SERVE__EXPECTED_TEACHERS=a,b`` (or ``..._IMAGE_ROOTS``) as well as a
        TOML list."""
        if isinstance(value, str):
            return [name.strip() for name in value.split(",") if name.strip()]
        return value


_BANK = BankConfig()  # the detector library's defaults are the config's


class DetectorsConfig(_Section):
    false_alarms_per_10k: float = Field(_BANK.false_alarms_per_10k, gt=0,
                                        description="KL-window false-alarm budget")
    hist_bins: int = Field(_BANK.hist_bins, ge=4, description="hashed vocabulary histogram bins")
    adwin_delta: float = Field(_BANK.adwin_delta, gt=0, lt=1,
                               description="ADWIN on log length; tuned on the real chains")

    embeddings: Literal["auto", "on", "off"] = Field(
        "off", description="content embeddings of every output (the embeddings extra): auto = "
                           "on where installed, else one log line; on = fail where not "
                           "installed. The first start distils the model (1-2 min of CPU)")
    embedding_dim: int = Field(emb.DEFAULT_DIM, ge=8, le=emb.MAX_DIM,
                               description="dimensions kept of the embedding (PCA)")
    embedding_cache: Path | None = Field(
        None, description="directory of the distilled embedding model; empty = "
                          "<serve.state_dir>/models")

    def bank(self, embedding_dim: int = 0) -> BankConfig:
        """The detector bank's settings: these fields over the library's other defaults;
        ``embedding_dim`` is the loaded embedder's (0: none)."""
        return BankConfig(false_alarms_per_10k=self.false_alarms_per_10k,
                          hist_bins=self.hist_bins, adwin_delta=self.adwin_delta,
                          embedding_dim=embedding_dim)

    def embedder(self, state_dir: Path) -> emb.Embedder | None:
        """The embedder these settings ask for (None when off or, in auto, not installed)."""
        cache = self.embedding_cache or Path(state_dir) / "models"
        return emb.load_embedder(self.embeddings, self.embedding_dim, cache)


_RELIABILITY = ReliabilityConfig()  # the consensus's own defaults are the config's


class ConsensusConfig(_Section):
    """The monitor's reliability-weighted consensus (docs: training, "The consensus")."""

    prior_accuracy: float = Field(_RELIABILITY.prior_accuracy, gt=0, lt=1,
                                  description="an unseen teacher's believed accuracy")
    prior_strength: float = Field(_RELIABILITY.prior_strength, gt=0,
                                  description="pseudo-cases behind prior_accuracy")
    class_strength: float = Field(
        _RELIABILITY.class_strength, gt=0,
        description="pseudo-cases tying a teacher's per-class row to its accuracy")
    correlation_strength: float = Field(
        _RELIABILITY.correlation_strength, gt=0,
        description="pseudo-errors behind 'no excess agreement' between two teachers")
    memory: int = Field(_RELIABILITY.memory, ge=1,
                        description="questions over which evidence fades")
    max_classes: int = Field(_RELIABILITY.max_classes, ge=2,
                             description="distinct answers above which a key is open "
                                         "(one-coin accuracy only)")
    min_teachers: int = Field(_RELIABILITY.min_teachers, ge=1,
                              description="fewer answers: the plurality decides and "
                                          "reliability only breaks its ties")
    correlation: bool = Field(_RELIABILITY.correlation,
                              description="discount voters that repeat each other's errors")

    def reliability(self) -> ReliabilityConfig:
        return ReliabilityConfig(**self.model_dump())


class TrainConfig(_Section):
    student: Path | None = Field(None, description="local Hugging Face model directory")
    trigger_every_groups: int = Field(256, gt=0)
    trigger_every_s: float = Field(3600.0, gt=0)
    trigger_on_alert: bool = True
    buffer_max_groups: int = Field(50_000, gt=0)
    min_group_answers: int = Field(
        2, ge=1, description="groups with fewer teacher answers never enter the training "
                             "buffer or the held-out probe (one answer has no negative)")
    group_id: str = Field("distill-trainer", description="consumer group of `distill train`")
    metrics_address: Address = Field("127.0.0.1:9109", description="trainer /metrics, /healthz")
    # A round's size: the first round (bootstrap SFT, synthesis, APO, gate) with the tiny
    # student fits a few minutes on 2 CPU cores; raise them for a real student on a GPU.
    steps: int = Field(20, gt=0, description="APO optimizer steps per round")
    max_new_groups: int = Field(32, gt=0, description="new groups trained on per round")
    bootstrap_max_groups: int = Field(256, gt=0,
                                      description="groups the first round's SFT learns from")
    synthesis_max_new_tokens: int = Field(
        32, gt=0, description="tokens the student writes per consensus positive")
    replay_fraction: float = Field(0.5, ge=0, le=4, description="replayed old groups per new")
    probe_fraction: float = Field(0.1, ge=0, lt=1, description="samples held out for the gate")
    gate_tolerance: float = Field(0.0, ge=0, description="promote if score >= current - this")


class HttpConfig(_Section):
    """Limits and the bearer token of every process's HTTP endpoint."""

    token: SecretStr | None = Field(
        None, description="bearer token for POST endpoints (ingest, /-/retrain); required "
                          "when they listen beyond loopback")
    token_file: Path | None = Field(None, description="file whose first line is the token")
    max_body_bytes: int = Field(DEFAULT_MAX_MESSAGE_BYTES * 8, gt=0,
                                description="largest request body accepted")
    timeout_s: float = Field(10.0, gt=0, description="seconds to receive one whole request")
    max_connections: int = Field(64, gt=0, description="connections served at once")


class GatewayConfig(_Section):
    address: str = Field("127.0.0.1:9110", description="host:port of POST /v1/events")


class IngestConfig(_Section):
    format: Format = Field("auto", description="input format of `distill ingest`")
    map: dict[str, str] = Field(default_factory=dict,
                                description="event field -> JMESPath into each record")
    rejects: Path = Field(Path("ingest-rejects.jsonl"), description="rejected lines + reason")


_SOURCES: ContextVar[tuple[Path | None, Mapping[str, str]]] = ContextVar(
    "distill_config_sources", default=(None, {}))


class Config(BaseSettings):
    """The whole configuration; build it with :func:`load_config`."""

    model_config = SettingsConfigDict(
        extra="forbid", frozen=True, env_prefix=ENV_PREFIX,
        env_nested_delimiter=ENV_NESTED_DELIMITER, case_sensitive=False,
        enable_decoding=False)  # raw strings: validation names the field, as for flags

    kafka: KafkaConfig = KafkaConfig()
    serve: ServeConfig = ServeConfig()
    detectors: DetectorsConfig = DetectorsConfig()
    consensus: ConsensusConfig = ConsensusConfig()
    train: TrainConfig = TrainConfig()
    http: HttpConfig = HttpConfig()
    gateway: GatewayConfig = GatewayConfig()
    ingest: IngestConfig = IngestConfig()

    @classmethod
    def settings_customise_sources(
        cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource, dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Flags (init arguments) > environment > TOML file, as :func:`load_config` set them."""
        path, env = _SOURCES.get()
        sources: list[PydanticBaseSettingsSource] = [init_settings, _EnvSource(settings_cls, env)]
        if path is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        return tuple(sources)


class _EnvSource(EnvSettingsSource):
    """pydantic-settings' environment source over a given mapping (tests pass their own)."""

    def __init__(self, settings_cls: type[BaseSettings], env: Mapping[str, str]) -> None:
        self._env = env
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return {k.lower(): v for k, v in self._env.items()}


DEFAULTS = Config()  # no file, no environment: every default, for the layers below
"""The defaults of every section; lower layers (trainer rounds, triggers, CLI help) read
their defaults here, so each value is written once."""


def observations_topic(k: KafkaConfig) -> str:
    return k.observations_topic or f"{k.group_id}-observations"


def drift_state_topic(k: KafkaConfig) -> str:
    return k.drift_state_topic or f"{k.group_id}-drift-state"


@dataclass(frozen=True)
class ConfigInvalid:
    """A config that failed validation; ``str()`` names each bad field."""

    errors: tuple[str, ...]
    valid = False

    def __str__(self) -> str:
        return "invalid config: " + "; ".join(self.errors)


@contextmanager
def _sources(path: Path | None, env: Mapping[str, str]) -> Iterator[None]:
    token = _SOURCES.set((path, env))
    try:
        yield
    finally:
        _SOURCES.reset(token)


def _field_env_names() -> frozenset[str]:
    """``DISTILL_<SECTION>__<FIELD>`` of every field, e.g. ``DISTILL_HTTP__TOKEN_FILE``."""
    return frozenset(
        f"{ENV_PREFIX}{section}{ENV_NESTED_DELIMITER}{name}".upper()
        for section, info in Config.model_fields.items()
        for name in type(info.default).model_fields)


def _read_secret_files(env: Mapping[str, str]) -> dict[str, str] | ConfigInvalid:
    """``DISTILL_..._FILE=path`` becomes ``DISTILL_...=<contents of path>``, unless the
    ``_FILE`` name is itself a field (``http.token_file`` reads its own file)."""
    out = dict(env)
    fields = _field_env_names()
    for key, value in env.items():
        upper = key.upper()
        if not (upper.startswith(ENV_PREFIX) and upper.endswith(FILE_SUFFIX)) or upper in fields:
            continue
        try:
            out[key[:-len(FILE_SUFFIX)]] = Path(value).read_text().removesuffix("\n")
        except OSError as exc:
            return ConfigInvalid((f"{key}: cannot read {value}: {exc.strerror}",))
        del out[key]
    return out


def _secret(loc: list[str]) -> bool:
    """A field that holds a secret: anything under ``kafka.security``, or a name that says so
    (``http.token``, a password)."""
    return loc[:2] == ["kafka", "security"] or any(
        word in part for part in loc for word in ("token", "password", "secret"))


def _describe(err: Any) -> str:
    """One error as ``section.field: message (got value)``. The value is shown only when it
    is a plain scalar of a field that holds no secret, so a secret is never echoed."""
    loc = [str(p) for p in err["loc"]]
    value = err.get("input")
    shown = not _secret(loc) and isinstance(value, str | int | float | bool | None)
    return f"{'.'.join(loc)}: {err['msg']} (got {repr(value) if shown else _REDACTED})"


def load_config(path: Path | None, env: Mapping[str, str] | None = None,
                overrides: Mapping[str, Any] | None = None) -> Config | ConfigInvalid:
    """File < environment < overrides (flags). Never raises for bad user input."""
    if path is not None:
        if not Path(path).is_file():
            return ConfigInvalid((f"{path}: file not found",))
        try:  # pydantic-settings reads it again; parsed here first for a clear error
            tomllib.loads(Path(path).read_text())
        except tomllib.TOMLDecodeError as exc:
            return ConfigInvalid((f"{path}: not valid TOML: {exc}",))
    environ = _read_secret_files(os.environ if env is None else env)
    if isinstance(environ, ConfigInvalid):
        return environ
    try:
        with _sources(None if path is None else Path(path), environ):
            return Config(**dict(overrides or {}))
    except ValidationError as exc:
        return ConfigInvalid(tuple(_describe(err) for err in exc.errors()))
    except SettingsError as exc:  # an environment value that is not valid JSON for its field
        return ConfigInvalid((str(exc).split(" from ")[0],))
