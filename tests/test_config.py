"""Config loading: TOML < environment < flags, errors that name the field, secrets kept secret."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner
from pydantic import SecretStr

from distill.cli import main
from distill.config import Config, ConfigInvalid, load_config
from stream.kafka import KafkaSettings

PASSWORD = "correct-horse-battery-staple"


def test_flags_beat_environment_beat_the_toml_file(tmp_path: Path) -> None:
    toml = tmp_path / "distill.toml"
    toml.write_text('[serve]\ncheckpoint_every = 7\ngroup_timeout_s = 9.0\n'
                    'expected_teachers = ["a", "b"]\n[kafka]\npartitions = 3\n')
    env = {"DISTILL_SERVE__CHECKPOINT_EVERY": "70", "DISTILL_KAFKA__PARTITIONS": "30"}
    cfg = load_config(toml, env=env, overrides={"kafka": {"partitions": 300}})
    assert isinstance(cfg, Config)
    assert (cfg.serve.checkpoint_every, cfg.kafka.partitions) == (70, 300)
    assert (cfg.serve.group_timeout_s, cfg.serve.expected_teachers) == (9.0, ["a", "b"])
    cfg = load_config(None, env={"DISTILL_SERVE__EXPECTED_TEACHERS": "x, y"})
    assert isinstance(cfg, Config) and cfg.serve.expected_teachers == ["x", "y"]


def test_bad_input_names_the_field_or_the_file(tmp_path: Path) -> None:
    assert str(load_config(tmp_path / "nope.toml", env={})).endswith("nope.toml: file not found")
    bad = tmp_path / "bad.toml"
    bad.write_text("[serve\n")
    assert "bad.toml: not valid TOML" in str(load_config(bad, env={}))
    err = load_config(None, env={"DISTILL_SERVE__GROUP_TIMEOUT_S": "soon"})
    assert isinstance(err, ConfigInvalid)
    assert str(err).startswith("invalid config: serve.group_timeout_s: Input should be")


def test_a_secret_from_a_file_reaches_the_client_and_nothing_else(tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text(PASSWORD + "\n")
    cfg = load_config(None, env={"DISTILL_KAFKA__SECURITY__SASL_PLAIN_PASSWORD_FILE": str(secret),
                                 "DISTILL_KAFKA__SECURITY__SASL_MECHANISM": "PLAIN"})
    assert isinstance(cfg, Config)
    assert isinstance(cfg.kafka.security["sasl_plain_password"], SecretStr)
    assert PASSWORD not in repr(cfg) and PASSWORD not in str(cfg)
    settings = KafkaSettings("k:9092", security=cfg.kafka.security, client="librdkafka")
    assert PASSWORD not in repr(settings)
    assert settings.common()["sasl_plain_password"] == PASSWORD
    assert settings.librdkafka_security()["sasl.password"] == PASSWORD
    missing = load_config(None, env={"DISTILL_KAFKA__SECURITY__SSL_PASSWORD_FILE": "/nonexistent"})
    assert "DISTILL_KAFKA__SECURITY__SSL_PASSWORD_FILE: cannot read /nonexistent" in str(missing)


def test_a_config_error_never_prints_the_secret() -> None:
    env = {"DISTILL_KAFKA__SECURITY__SASL_PLAIN_PASSWORD": PASSWORD,
           "DISTILL_KAFKA__PARTITIONS": "many"}
    result = CliRunner().invoke(main, ["serve", "--max-records", "0"], env=env)
    assert result.exit_code == 2, result.output
    assert "kafka.partitions" in result.output and PASSWORD not in result.output
    err = load_config(None, env={}, overrides={"kafka": {"security": {"sasl.password": 5}}})
    assert str(err) == ("invalid config: kafka.security: Value error, sasl.password must be a "
                        "string (got **********)")
    err = load_config(None, env={}, overrides={"http": {"token": 987654321}})
    assert "http.token" in str(err) and "987654321" not in str(err)


def test_lower_layers_take_their_defaults_from_the_config() -> None:
    from detectors.bank import BankConfig
    from distill.config import DEFAULTS
    from distill.trainer.follow import FollowSettings
    from stream.dedup import DedupWindow
    from stream.join import SampleJoiner

    serve, train, det = DEFAULTS.serve, DEFAULTS.train, DEFAULTS.detectors
    joiner = SampleJoiner()
    assert (joiner.max_open, joiner.timeout_s) == (serve.join_buffer_max, serve.group_timeout_s)
    assert DedupWindow().max_size == serve.dedup_window
    assert det.bank() == BankConfig()
    follow = FollowSettings()
    assert (follow.group_id, follow.buffer_max_groups, follow.probe_fraction) == (
        train.group_id, train.buffer_max_groups, train.probe_fraction)
    assert (follow.policy.every_groups, follow.policy.every_s, follow.policy.on_alert) == (
        train.trigger_every_groups, train.trigger_every_s, train.trigger_on_alert)
    assert (follow.round.steps, follow.round.max_new_groups, follow.round.tolerance) == (
        train.steps, train.max_new_groups, train.gate_tolerance)


def test_the_consensus_section_reaches_the_monitor_pipeline(tmp_path: Path) -> None:
    from dataclasses import fields

    from distill.config import DEFAULTS, ConsensusConfig
    from distill.consensus import ReliabilityConfig
    from distill.monitor.service import pipeline_config

    # Every knob of the consensus is in the config, with the consensus's own default.
    assert set(ConsensusConfig.model_fields) == {f.name for f in fields(ReliabilityConfig)}
    assert DEFAULTS.consensus.reliability() == ReliabilityConfig()
    toml = tmp_path / "distill.toml"
    toml.write_text("[consensus]\nmin_teachers = 3\ncorrelation = false\n")
    cfg = load_config(toml, env={"DISTILL_CONSENSUS__MEMORY": "500"})
    assert isinstance(cfg, Config)
    got = pipeline_config(cfg).consensus
    assert (got.min_teachers, got.correlation, got.memory) == (3, False, 500)
    err = load_config(None, env={"DISTILL_CONSENSUS__PRIOR_ACCURACY": "1.0"})
    assert str(err).startswith("invalid config: consensus.prior_accuracy: Input should be less")


def test_cli_help_shows_the_config_defaults() -> None:
    from distill.config import DEFAULTS

    out = CliRunner().invoke(main, ["serve", "--help"], terminal_width=200).output
    assert f"[default: {DEFAULTS.serve.checkpoint_every}]" in out
    assert f"[default: {DEFAULTS.kafka.group_id}]" in out
