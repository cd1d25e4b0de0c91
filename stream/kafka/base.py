"""The client-independent part of Kafka I/O: settings, the record, the source and sink protocols."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

log = logging.getLogger(__name__)

Headers = list[tuple[str, bytes]]
#: The largest record value the service produces. Kafka's defaults allow 1 MiB per request
#: (kafka-python ``max_request_size``, the broker's ``message.max.bytes``) and 1,000,000
#: bytes per message (librdkafka ``message.max.bytes``); this stays below all of them with
#: room for the key, headers and batch overhead. Larger outputs are cut to fit by a
#: documented rule (dead letters: :mod:`stream.deadletter`; groups: ``distill.groups``).
MAX_RECORD_BYTES = 900_000
CLIENTS = ("kafka-python", "librdkafka")
#: kafka-python TLS/SASL option -> librdkafka property (``security`` may use either name).
SECURITY_KEYS = {
    "security_protocol": "security.protocol",
    "sasl_mechanism": "sasl.mechanism",
    "sasl_plain_username": "sasl.username",
    "sasl_plain_password": "sasl.password",
    "ssl_cafile": "ssl.ca.location",
    "ssl_certfile": "ssl.certificate.location",
    "ssl_keyfile": "ssl.key.location",
}
_KAFKA_PYTHON_KEYS = {v: k for k, v in SECURITY_KEYS.items()}


@dataclass(frozen=True)
class KafkaSettings:
    """Connection settings shared by consumers, producers and the admin client.

    ``client`` picks the library behind :func:`open_source` / :func:`open_sink`:
    ``"kafka-python"`` or ``"librdkafka"`` (confluent-kafka). ``security`` holds TLS/SASL
    options under kafka-python's names (``security_protocol``, ``sasl_mechanism``,
    ``sasl_plain_username``, ``ssl_cafile``, ...), translated for librdkafka; a dotted key is
    a librdkafka property, passed to librdkafka unchanged (and to kafka-python under its
    name when it has one, else left out there). The session/heartbeat defaults join a group
    in ~3 s; Kafka's 45 s default takes ~23 s.
    """

    bootstrap_servers: str
    client_id: str = "drift-distill"
    session_timeout_ms: int = 6000
    heartbeat_interval_ms: int = 2000
    request_timeout_ms: int = 30000
    security: Mapping[str, Any] = field(default_factory=dict)
    client: str = "kafka-python"

    def __post_init__(self) -> None:
        if self.client not in CLIENTS:
            raise ValueError(f"unknown Kafka client {self.client!r}; one of {', '.join(CLIENTS)}")

    def common(self) -> dict[str, Any]:
        """kafka-python keyword arguments (also used by the admin client for either client)."""
        security: dict[str, Any] = {}
        for key, value in self.security.items():
            if "." not in key:
                security[key] = _reveal(value)
            elif key in _KAFKA_PYTHON_KEYS:
                security[_KAFKA_PYTHON_KEYS[key]] = _reveal(value)
            else:
                log.debug("librdkafka property %s has no kafka-python equivalent; skipped", key)
        return {"bootstrap_servers": self.bootstrap_servers.split(","),
                "client_id": self.client_id, **security}

    def librdkafka_security(self) -> dict[str, Any]:
        """``security`` as librdkafka properties; ValueError names a key it cannot map."""
        out: dict[str, Any] = {}
        for key, value in self.security.items():
            if "." in key:
                out[key] = _reveal(value)
            elif key in SECURITY_KEYS:
                out[SECURITY_KEYS[key]] = _reveal(value)
            else:
                raise ValueError(
                    f"kafka.security key {key!r} has no librdkafka equivalent; known: "
                    f"{', '.join(sorted(SECURITY_KEYS))}, or give a librdkafka property "
                    f"name (with dots) directly")
        return out


def _reveal(value: Any) -> Any:
    """The plain value of a secret (pydantic's ``SecretStr``), for the client library only;
    everywhere else it stays wrapped, so reprs and logs show ``**********``."""
    reveal = getattr(value, "get_secret_value", None)
    return value if reveal is None else reveal()


@dataclass(frozen=True, slots=True)
class Record:
    """One consumed message, independent of the client library."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Headers
    timestamp_ms: int


class Source(Protocol):
    """A consumer-group member: :class:`KafkaSource` or ``LibrdkafkaSource``."""

    topics: list[str]
    group_id: str

    def poll(self, timeout_ms: int = 500, max_records: int | None = None) -> list[Record]: ...

    def records(self, timeout_ms: int = 500) -> Iterator[Record]: ...

    def assignment(self) -> list[tuple[str, int]]: ...

    def seek(self, topic: str, partition: int, offset: int) -> None: ...

    def committed(self, topic: str, partition: int) -> int | None: ...

    def end_offsets(self, partitions: Iterable[tuple[str, int]]
                    ) -> dict[tuple[str, int], int]: ...

    def log_bounds(self, topic: str, partition: int) -> tuple[int, int]: ...

    def commit(self, offsets: Mapping[tuple[str, int], int]) -> None: ...

    def close(self) -> None: ...


class Sink(Protocol):
    """A producer: :class:`KafkaSink` or ``LibrdkafkaSink``."""

    def send(self, topic: str, value: bytes, key: bytes | None = None,
             headers: Headers | None = None, partition: int | None = None) -> None: ...

    def flush(self, timeout: float = 30.0) -> None: ...

    def close(self) -> None: ...
