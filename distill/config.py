"""One configuration: a TOML file, then ``DISTILL_<SECTION>__<FIELD>`` environment overrides,
then command-line flags. Loading returns the config or a :class:`ConfigInvalid` naming the
field, so a typo fails at start with a message rather than a traceback.

>>> cfg = load_config(None, env={}, overrides={"serve": {"checkpoint_every": 500}})
>>> cfg.serve.checkpoint_every, cfg.kafka.input_topic
(500, 'teacher-outputs')
>>> print(load_config(None, env={"DISTILL_SERVE__CHECKPOINT_EVERY": "-1"}))
invalid config: serve.checkpoint_every: Input should be greater than 0 (got '-1')
>>> print(load_config(None, env={}, overrides={"serve": {"chekpoint_every": 1}}))
invalid config: serve.chekpoint_every: Extra inputs are not permitted (got 1)
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from stream.events import DEFAULT_MAX_MESSAGE_BYTES
from stream.formats import FORMATS

ENV_PREFIX = "DISTILL_"


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
    session_timeout_ms: int = Field(6000, ge=1000)
    heartbeat_interval_ms: int = Field(2000, ge=100)
    security: dict[str, Any] = Field(
        default_factory=dict,
        description="TLS/SASL options under kafka-python's names (security_protocol, "
                    "sasl_mechanism, ...); dotted keys are librdkafka properties")
    client: Literal["kafka-python", "librdkafka"] = Field(
        "kafka-python",
        description="Kafka client of `distill serve`: kafka-python, or librdkafka "
                    "(confluent-kafka, faster; pip install 'drift-distill[librdkafka]')")


class ServeConfig(_Section):
    state_dir: Path = Field(Path("state"), description="checkpoints, archive, registry")
    max_message_bytes: int = Field(DEFAULT_MAX_MESSAGE_BYTES, gt=0)
    checkpoint_every: int = Field(5000, gt=0, description="events between checkpoints")
    checkpoint_interval_s: float = Field(5.0, gt=0, description="seconds between checkpoints")
    expected_teachers: list[str] = Field(
        default_factory=list, description="teachers a group waits for; empty = learned")
    group_timeout_s: float = Field(300.0, gt=0, description="produced_at span before timeout")
    join_buffer_max: int = Field(10_000, gt=0, description="open samples held at most")
    dedup_window: int = Field(100_000, gt=0, description="event ids remembered at most")
    metrics_address: str = Field("127.0.0.1:9108", description="host:port of /metrics, /healthz")
    archive_segment_events: int = Field(50_000, gt=0)
    timeline_every: int = Field(
        500, gt=0, description="records between bank snapshots in timeline.jsonl (for reports)")
    log_format: Literal["text", "json"] = "text"


class DetectorsConfig(_Section):
    false_alarms_per_10k: float = Field(0.5, gt=0, description="KL-window false-alarm budget")
    hist_bins: int = Field(64, ge=4, description="hashed vocabulary histogram bins")
    adwin_delta: float = Field(0.05, gt=0, lt=1,
                               description="ADWIN on log length; tuned on the real chains")


class TrainConfig(_Section):
    student: Path | None = Field(None, description="local Hugging Face model directory")
    trigger_every_groups: int = Field(256, gt=0)
    trigger_every_s: float = Field(3600.0, gt=0)
    trigger_on_alert: bool = True
    buffer_max_groups: int = Field(50_000, gt=0)
    group_id: str = Field("distill-trainer", description="consumer group of `distill train`")
    metrics_address: str = Field("127.0.0.1:9109", description="trainer /metrics, /healthz")
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
    format: Literal[FORMATS] = Field("auto", description="input format of `distill ingest`")
    map: dict[str, str] = Field(default_factory=dict,
                                description="event field -> JMESPath into each record")
    rejects: Path = Field(Path("ingest-rejects.jsonl"), description="rejected lines + reason")


class Config(_Section):
    kafka: KafkaConfig = KafkaConfig()
    serve: ServeConfig = ServeConfig()
    detectors: DetectorsConfig = DetectorsConfig()
    train: TrainConfig = TrainConfig()
    http: HttpConfig = HttpConfig()
    gateway: GatewayConfig = GatewayConfig()
    ingest: IngestConfig = IngestConfig()


@dataclass(frozen=True)
class ConfigInvalid:
    """A config that failed validation; ``str()`` names each bad field."""

    errors: tuple[str, ...]
    valid = False

    def __str__(self) -> str:
        return "invalid config: " + "; ".join(self.errors)


def _env_overrides(env: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in env.items():
        if not key.startswith(ENV_PREFIX) or "__" not in key:
            continue
        section, _, name = key[len(ENV_PREFIX):].lower().partition("__")
        out.setdefault(section, {})[name] = value
    return out


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_config(path: Path | None, env: Mapping[str, str] | None = None,
                overrides: Mapping[str, Any] | None = None) -> Config | ConfigInvalid:
    """File < environment < overrides (flags). Never raises for bad user input."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            data = tomllib.loads(Path(path).read_text())
        except FileNotFoundError:
            return ConfigInvalid((f"{path}: file not found",))
        except tomllib.TOMLDecodeError as exc:
            return ConfigInvalid((f"{path}: not valid TOML: {exc}",))
    data = _merge(data, _env_overrides(os.environ if env is None else env))
    data = _merge(data, overrides or {})
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        return ConfigInvalid(tuple(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']} (got {err.get('input')!r})"
            for err in exc.errors()))
