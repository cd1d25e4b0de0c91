"""The command line: every subcommand documents itself, config errors name the field, and
the monitor's commands never import the training stack."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from distill.cli import SUBCOMMANDS, main


@pytest.mark.parametrize("name", sorted(SUBCOMMANDS))
def test_every_subcommand_has_help(name: str) -> None:
    result = CliRunner().invoke(main, [name, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage: " in result.output and len(result.output.splitlines()) > 5


def test_monitor_commands_do_not_import_torch(tmp_path: Path) -> None:
    code = ("import sys\nfrom click.testing import CliRunner\nfrom distill.cli import main\n"
            "for args in (['--help'], ['serve', '--help'], ['status', '--state-dir', sys.argv[1]],"
            " ['simulate', '--help'], ['replay', '--help'], ['bench', '--help']):\n"
            "    r = CliRunner().invoke(main, args)\n"
            "    assert r.exit_code == 0, (args, r.output)\n"
            "import distill.monitor.service, distill.monitor.pipeline\n"
            "heavy = ('torch', 'transformers', 'trl', 'peft')\n"
            "print(sorted(m for m in heavy if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True,
                         text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_bad_config_fails_at_start_naming_the_field(tmp_path: Path) -> None:
    cfg = tmp_path / "distill.toml"
    cfg.write_text("[serve]\ncheckpoint_every = 0\n[kafka]\npartitions = 'many'\n")
    result = CliRunner().invoke(main, ["serve", "--config", str(cfg)])
    assert result.exit_code == 2
    assert "serve.checkpoint_every" in result.output and "kafka.partitions" in result.output


def test_unknown_config_key_is_rejected(tmp_path: Path) -> None:
    cfg = tmp_path / "distill.toml"
    cfg.write_text("[serve]\nchekpoint_every = 10\n")
    result = CliRunner().invoke(main, ["status", "--config", str(cfg)])
    assert result.exit_code == 2 and "serve.chekpoint_every" in result.output


def test_environment_overrides_the_file_and_flags_override_both(tmp_path: Path) -> None:
    cfg = tmp_path / "distill.toml"
    cfg.write_text(f"[serve]\nstate_dir = '{tmp_path / 'from-file'}'\n")
    env = {"DISTILL_SERVE__STATE_DIR": str(tmp_path / "from-env")}
    for name in ("from-env", "from-flag"):  # status fails on a state dir that does not exist
        (tmp_path / name).mkdir()
    result = CliRunner(env=env).invoke(main, ["status", "--config", str(cfg), "--json"])
    assert result.exit_code == 0 and "from-env" in result.output
    result = CliRunner(env=env).invoke(main, ["status", "--config", str(cfg), "--json",
                                              "--state-dir", str(tmp_path / "from-flag")])
    assert "from-flag" in result.output


def test_serve_starts_the_embedded_broker_into_a_state_dir_that_does_not_exist(
        tmp_path: Path) -> None:
    state = tmp_path / "not" / "yet"
    result = CliRunner().invoke(main, ["serve", "--state-dir", str(state), "--max-records", "0",
                                       "--metrics-address", "127.0.0.1:0"])
    assert result.exit_code == 0, result.output
    assert (state / "tansu.log").is_file()
