"""Lost broker data is loud: a checkpointed offset outside the log is logged, counted, on
/healthz and `distill status`, and handled by ``serve.offset_out_of_range``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from serving import Topics, produce_events, run_in_thread, status_json

from distill.config import Config
from distill.exceptions import OffsetOutOfRange
from distill.monitor.service import MonitorService, RunLimits
from stream.broker import EmbeddedBroker
from stream.events import TeacherEvent
from stream.kafka import KafkaSettings

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def events(first: int, n: int) -> list[TeacherEvent]:
    return [TeacherEvent(f"e{i}", f"s{i}", "a", "Final answer: yes",
                         T0 + timedelta(seconds=i)) for i in range(first, first + n)]


def with_policy(cfg: Config, policy: str) -> Config:
    return cfg.model_copy(update={"serve": cfg.serve.model_copy(
        update={"offset_out_of_range": policy})})


@pytest.mark.broker
@pytest.mark.slow
def test_checkpoint_beyond_a_restarted_brokers_log_is_loud(tmp_path: Path) -> None:
    topics = Topics.fresh()
    with EmbeddedBroker() as broker:
        port = broker.port
        produce_events(KafkaSettings(broker.bootstrap_servers), topics.input, events(0, 10))
        cfg = topics.config(broker.bootstrap_servers, tmp_path)
        assert run_in_thread(cfg).records == 10
    with EmbeddedBroker(port=port) as broker:  # its storage was in memory: all gone
        produce_events(KafkaSettings(broker.bootstrap_servers), topics.input, events(10, 3))
        with pytest.raises(OffsetOutOfRange, match=r"offset 10 is outside the log \[0, \d\]"):
            run_in_thread(with_policy(cfg, "fail"))
        service = MonitorService(with_policy(cfg, "earliest"),
                                 limits=RunLimits(idle_exit_s=2.0))
        summary = service.run()
    assert summary.records == 3
    # the input partition and the internal observations partition both lost their data
    inputs = [r for r in service.offset_resets if r["partition"] == f"{topics.input}[0]"]
    assert [r["resumed_at"] for r in inputs] == [0]
    assert service.registry.get_sample_value("distill_offset_out_of_range_total") == 2
    assert service.health()[1]["offset_resets"][0]["checkpointed"] == 10
    status = status_json(tmp_path)
    lost = [(r["policy"], r["checkpointed"]) for r in status["offset_resets"]
            if r["partition"] == f"{topics.input}[0]"]
    assert lost == [("fail", 10), ("earliest", 10)]
    assert status["teachers"]["a"]["events"] == 13
