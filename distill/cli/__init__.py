"""The ``distill`` command line. Subcommands load lazily, so ``distill --help`` and the
monitor never import torch."""

from __future__ import annotations

import importlib

import click

from distill import __version__

SUBCOMMANDS = {
    "serve": "Run the monitor: Kafka in, drift alerts and teacher groups out.",
    "train": "Run the continual APO trainer (--follow consumes the groups topic).",
    "retrain": "Run one training round by hand over the stored groups.",
    "ingest": "Send teacher outputs from JSONL (ours, OpenAI, Anthropic, --map) to Kafka.",
    "gateway": "Take teacher events over HTTP (POST /v1/events) into Kafka.",
    "replay": "Run an archived stream through the monitor pipeline offline.",
    "simulate": "Produce a seeded multi-teacher stream with scheduled drifts.",
    "report": "Draw drift timelines and training curves as PNG and one HTML page.",
    "status": "Show what the monitor and trainer hold: counts, detectors, alerts, versions.",
    "bench": "Benchmarks: detection on real version switches, distillation, consensus.",
}


class LazyGroup(click.Group):
    """A group whose subcommands live in ``distill.cli.<name>`` and import on use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(SUBCOMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in SUBCOMMANDS:
            return None
        module = importlib.import_module(f"distill.cli.{cmd_name}")
        command: click.Command = module.command
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with formatter.section("Commands"):
            formatter.write_dl(list(SUBCOMMANDS.items()))


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"],
                                                "show_default": True})
@click.version_option(__version__, prog_name="distill")
def main() -> None:
    """drift-distill: watch several teacher models for drift and distil a student from
    what they agree on (APO, Plackett-Luce over one consensus positive and N teacher
    negatives).

    Every subcommand takes --config FILE (TOML); DISTILL_<SECTION>__<FIELD> environment
    variables and flags override it. With no --bootstrap-servers, an embedded Kafka-protocol
    broker (Tansu) is started on loopback.
    """
