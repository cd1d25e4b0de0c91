"""The daemons' Kafka connection settings, built from the config in one place.

`distill serve` and `distill train --follow` both call :func:`kafka_settings`, so every
``[kafka]`` field (the client library, TLS/SASL, group timings) reaches both.
"""

from __future__ import annotations

from distill.config import Config
from stream.kafka import KafkaSettings


def kafka_settings(cfg: Config, bootstrap_servers: str,
                   client_id: str = "drift-distill") -> KafkaSettings:
    """:class:`~stream.kafka.KafkaSettings` of ``cfg.kafka`` for ``bootstrap_servers``."""
    k = cfg.kafka
    return KafkaSettings(bootstrap_servers=bootstrap_servers, client_id=client_id,
                         session_timeout_ms=k.session_timeout_ms,
                         heartbeat_interval_ms=k.heartbeat_interval_ms, security=k.security,
                         client=k.client)
