"""Session fixtures: one real Kafka-protocol broker per test session.

Set DISTILL_TEST_BOOTSTRAP_SERVERS to run the same tests against an existing cluster
(Apache Kafka, Redpanda, ...); otherwise the embedded Tansu broker is started.

Markers follow from what a test uses, not from memory: every test that asks (directly or
through another fixture) for the broker is marked ``broker``, and the files and tests listed
in :data:`SLOW` are marked ``slow``. ``pytest -m "not slow and not broker"`` is the fast
subset.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from stream.broker import EmbeddedBroker
from stream.kafka import KafkaSettings

BOOTSTRAP_ENV = "DISTILL_TEST_BOOTSTRAP_SERVERS"
BROKER_FIXTURES = frozenset({"bootstrap_servers", "kafka_settings"})
# Tests that start a broker of their own (not through the fixtures): node names.
OWN_BROKER = frozenset({
    "tests/test_cli.py::test_serve_starts_the_embedded_broker_into_a_state_dir_that_does_not_exist",
})
# Tests that take more than ~10 s on 2 cores (pytest --durations): whole files by path,
# single tests by node name without parameters.
SLOW = frozenset({
    "tests/test_serve_faults.py",
    "tests/test_prometheus_live.py",
    "tests/test_retrain_e2e.py",
    "tests/test_bench_distill.py",
    "tests/test_apo_trainer.py::test_reference_cache_lets_a_replayed_group_skip_the_reference_pass",
    "tests/test_apo_trainer.py::test_train_round_writes_loadable_safetensors_model_and_logs_loss",
    "tests/test_apo_trainer.py::test_uniform_apo_raises_positive_margin_over_every_negative",
})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark by use: the broker fixtures give ``broker``; :data:`SLOW` gives ``slow``."""
    root = config.rootpath
    for item in items:
        path = item.path.relative_to(root).as_posix() if item.path.is_relative_to(root) else ""
        name = f"{path}::{item.name.partition('[')[0]}"
        if BROKER_FIXTURES.intersection(getattr(item, "fixturenames", ())) or name in OWN_BROKER:
            item.add_marker(pytest.mark.broker)
        if path in SLOW or name in SLOW:
            item.add_marker(pytest.mark.slow)


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
