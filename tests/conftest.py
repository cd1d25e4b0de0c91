"""Session fixtures: one real Kafka-protocol broker per test session.

Set DISTILL_TEST_BOOTSTRAP_SERVERS to run the same tests against an existing cluster
(Apache Kafka, Redpanda, ...); otherwise the embedded Tansu broker is started.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from stream.broker import EmbeddedBroker
from stream.kafka import KafkaSettings

BOOTSTRAP_ENV = "DISTILL_TEST_BOOTSTRAP_SERVERS"


@pytest.fixture(scope="session")
def bootstrap_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    external = os.environ.get(BOOTSTRAP_ENV)
    if external:
        yield external
        return
    log = tmp_path_factory.mktemp("broker") / "tansu.log"
    with EmbeddedBroker(log_path=log) as broker:
        yield broker.bootstrap_servers


@pytest.fixture()
def kafka_settings(bootstrap_servers: str) -> KafkaSettings:
    return KafkaSettings(bootstrap_servers=bootstrap_servers)


@pytest.fixture()
def topic() -> str:
    """A fresh topic name per test, so tests never see each other's messages."""
    return f"t-{uuid.uuid4().hex[:12]}"
