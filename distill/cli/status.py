"""`distill status`: what the monitor (and the trainer's registry) hold on disk."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from distill.cli.common import config_option, default, load_or_exit


@click.command(name="status")
@config_option
@click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help=f"The monitor's state dir. {default('serve', 'state_dir')}")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def command(config_path: Path | None, state_dir: Path | None, as_json: bool) -> None:
    """Per teacher: events processed, each signal's estimate and detections, the signals
    that are live (answer signals are off for a teacher without extractable answers), the
    last alert; groups completed and timed out; each partition's checkpointed offset; and the
    student registry when a trainer shares the state dir. Reads only durable checkpoints,
    so it shows what a restart would resume from."""
    from distill.exceptions import CheckpointUnreadable
    from distill.monitor.status import monitor_status

    cfg = load_or_exit(config_path, {"serve": {"state_dir": state_dir}})
    try:
        doc = monitor_status(cfg.serve.state_dir)
    except CheckpointUnreadable as exc:
        raise click.ClickException(f"cannot read the monitor's state: {exc}") from exc
    doc["registry"] = _registry(cfg.serve.state_dir)
    if as_json:
        click.echo(json.dumps(doc, indent=2, sort_keys=True, default=str))
        return
    _print(doc)


def _registry(state_dir: Path) -> Any:
    try:
        from distill.trainer.registry import registry_summary
    except ImportError:
        return None
    return registry_summary(state_dir)


def _print(doc: dict[str, Any]) -> None:
    console = Console()
    table = Table(title=f"drift-distill monitor: {doc['state_dir']}")
    for col in ("teacher", "events (detected)", "signal", "estimate", "detections",
                "live signals", "last alert (teacher's event)"):
        table.add_column(col)
    for teacher, t in doc["teachers"].items():
        alert = t.get("last_alert")
        last = f"{alert['signal']} @ {alert['index']}" if alert else "-"
        for i, (signal, s) in enumerate(sorted(t.get("signals", {}).items())):
            est = s.get("estimate")
            events = f"{t['events']} ({t.get('detected_events', 0)})"
            table.add_row(teacher if i == 0 else "", events if i == 0 else "",
                          signal, "-" if est is None else f"{est:.3g}",
                          str(s.get("detections", 0)), ",".join(s.get("live", [])) or "-",
                          last if i == 0 else "")
    console.print(table)
    console.print(f"groups: {doc['groups_completed']} completed, {doc['groups_timed_out']} "
                  f"timed out, {doc['groups_open']} open; duplicates {doc['duplicates']}")
    d = doc.get("detect") or {}
    if d:
        console.print(f"detect stage: {d['observations']} observations applied, "
                      f"{d['buffered']} buffered (within the allowed lateness), {d['late']} "
                      f"late, {d['duplicates']} re-sent copies dropped")
    for cp in doc["checkpoints"]:
        console.print(f"checkpoint {cp['topic']}[{cp['partition']}] offset {cp['offset']}")
    for r in doc.get("offset_resets", []):
        console.print(f"[red]broker data lost[/red]: {r['partition']} checkpointed offset "
                      f"{r['checkpointed']} outside its log [{r['log_start']}, {r['log_end']}]"
                      f"; {r['policy']}")
    reg = doc.get("registry")
    if reg and reg.get("present"):
        _print_registry(console, reg)


def _print_registry(console: Console, reg: dict[str, Any]) -> None:
    """Current and reference versions, and the recent runs (a dead run shows abandoned)."""
    if "error" in reg:
        console.print(f"student registry: {reg['error']}")
        return
    console.print(f"student registry: current {reg['current']}, reference {reg['reference']}, "
                  f"{reg['versions_total']} versions, last success {reg['last_success']}")
    table = Table(title="training runs (newest last)")
    for col in ("run id", "status", "trigger", "version", "started", "reason"):
        table.add_column(col)
    for r in reg["runs"]:
        table.add_row(r["run_id"], str(r["status"]), str(r.get("trigger") or "-"),
                      str(r.get("version") or "-"), str(r.get("started_at") or "-"),
                      str(r.get("reason") or "")[:60])
    console.print(table)
