"""Operating the trainer with real processes and the tiny student.

* a round killed with SIGKILL shows as ``abandoned`` in `distill status` and is marked so
  by the next start; SIGTERM ends a round at a step boundary, exit 5, run ``interrupted``,
  the registry holding only whole models;
* a run id whose model was committed but whose run was never recorded (the process died
  in between) is not trained again;
* `distill retrain` while `distill train --follow` runs hands the round over at once, the
  follower runs it under that run id, and SIGTERM stops the follower.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from itertools import islice
from pathlib import Path

import pytest

from distill.trainer.buffer import GroupBuffer
from distill.trainer.registry import Registry
from distill.trainer.round import TrainerPaths

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "TOKENIZERS_PARALLELISM": "false"}
CLI = [sys.executable, "-c", "from distill.cli import main; main()"]
QUICK = ["--apo", "synthesis=best_teacher", "--apo", "bootstrap_max_steps=2",
         "--apo", "max_length=96", "--apo", "max_prompt_length=48", "--replay-fraction", "0",
         "--max-new-groups", "8", "--log-format", "json", "--no-progress"]


@pytest.fixture(scope="module")
def tiny_student(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from distill.apo.tiny import build_tiny_student
    from stream.simulator import generate, load_scenario

    events = islice(generate(load_scenario("default"), seed=1), 350)
    texts = [t for e in events for t in (e.prompt or "", e.output)]
    return build_tiny_student(tmp_path_factory.mktemp("student") / "tiny", texts)


def filled_state(root: Path, n: int = 30) -> Path:
    from toy_groups import simulated_groups

    with GroupBuffer(TrainerPaths(root).buffer, probe_fraction=0.15) as buf:
        buf.add(simulated_groups(n))
    return root


def start(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([*CLI, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=ROOT, env=ENV)


def wait_for(proc: subprocess.Popen[str], predicate: object, timeout: float = 240) -> list[str]:
    """Read stderr lines until ``predicate(line)``; the lines seen (the process is killed
    when it takes too long, so the suite never hangs)."""
    assert proc.stderr is not None
    watchdog = threading.Timer(timeout, proc.kill)
    watchdog.start()
    seen: list[str] = []
    try:
        for line in proc.stderr:
            seen.append(line)
            if predicate(line):  # type: ignore[operator]
                return seen
    finally:
        watchdog.cancel()
    raise AssertionError("never saw the line; stderr:\n" + "".join(seen)[-3000:])


def training_step(line: str) -> bool:
    try:
        doc = json.loads(line)
    except ValueError:
        return False
    return doc.get("stage") == "train" and doc.get("step", 0) >= 1


def status(state: Path) -> dict:
    out = subprocess.run([*CLI, "status", "--state-dir", str(state), "--json"], env=ENV,
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return {r["run_id"]: r for r in json.loads(out.stdout)["registry"]["runs"]}


@pytest.mark.train
@pytest.mark.slow
def test_kill_is_abandoned_sigterm_is_interrupted_and_a_committed_run_id_never_retrains(
        tmp_path: Path, tiny_student: Path) -> None:
    state = filled_state(tmp_path / "state")
    paths = TrainerPaths(state)
    common = ["retrain", "--state-dir", str(state), "--steps", "100000", *QUICK]

    # SIGKILL mid-training: `distill status` shows the run abandoned (nothing written)
    killed = start(*common, "--student", str(tiny_student), "--run-id", "killed")
    wait_for(killed, training_step)
    killed.kill()
    killed.wait()
    assert status(state)["killed"]["status"] == "abandoned"
    assert Registry(paths.registry).run("killed")["status"] == "running"

    # SIGTERM mid-training: stops at a step boundary within seconds, exit 5
    stopped = start(*common, "--run-id", "stopped", "--json")
    seen = wait_for(stopped, training_step)
    stopped.send_signal(15)
    out, err = stopped.communicate(timeout=120)  # 100,000 steps would take hours
    assert stopped.returncode == 5, "".join(seen)[-2000:] + err[-2000:]
    outcome = json.loads(out)
    assert outcome["status"] == "interrupted"
    assert "of 100000 steps" in outcome["reason"]  # stopped early, at a step boundary
    reg = Registry(paths.registry)
    assert reg.run("killed")["status"] == "abandoned"  # marked by the next start
    assert reg.run("stopped")["status"] == "interrupted"
    assert [v.version for v in reg.versions()] == ["v0001"] and reg.verify("v0001")
    assert [p.name for p in (paths.registry / "models").iterdir()] == ["v0001"]

    # a round that commits, then "dies" before its run is recorded (the record is put
    # back to `running`, as a kill between the two writes leaves it): never trains again
    done = subprocess.run([*CLI, "retrain", "--state-dir", str(state), "--steps", "2",
                           "--run-id", "done", "--json", *QUICK], env=ENV, cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    first = json.loads(done.stdout)
    assert first["status"] in ("promoted", "kept")
    registry_file = paths.registry / "registry.json"
    doc = json.loads(registry_file.read_text())
    doc["runs"]["done"] = {"status": "running", "started_at": doc["runs"]["done"]["started_at"],
                           "trigger": "manual", "upto_seq": first["upto_seq"]}
    registry_file.write_text(json.dumps(doc))
    versions = len(Registry(paths.registry).versions())
    again = subprocess.run([*CLI, "retrain", "--state-dir", str(state), "--run-id", "done",
                            "--json", *QUICK], env=ENV, cwd=ROOT, capture_output=True,
                           text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    second = json.loads(again.stdout)
    assert second["reused"] is True and second["status"] == first["status"]
    assert second["version"] == first["version"]
    reg = Registry(paths.registry)
    assert len(reg.versions()) == versions
    assert reg.run("done")["status"] == first["status"]


@pytest.fixture()
def follower_config(tmp_path: Path, topic: str) -> Path:
    path = tmp_path / "distill.toml"
    path.write_text(f"""
[kafka]
groups_topic = "{topic}-groups"
alerts_topic = "{topic}-alerts"
partitions = 1

[train]
group_id = "{topic}-trainer"
probe_fraction = 0.15
""")
    return path


@pytest.fixture()
def follower(tmp_path: Path, tiny_student: Path, follower_config: Path,
             bootstrap_servers: str) -> Iterator[tuple[subprocess.Popen[str], Path, list[str]]]:
    state = filled_state(tmp_path / "state")
    proc = start("train", "--follow", "--config", str(follower_config), "--bootstrap-servers",
                 bootstrap_servers, "--state-dir", str(state), "--student", str(tiny_student),
                 "--metrics-address", "127.0.0.1:0", "--steps", "2", *QUICK[:-1])
    try:
        seen = wait_for(proc, lambda line: "trainer following" in line)
        yield proc, state, seen
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.broker
@pytest.mark.train
@pytest.mark.slow
def test_retrain_hands_the_round_to_a_running_follower_at_once(
        follower: tuple[subprocess.Popen[str], Path, list[str]], topic: str) -> None:
    proc, state, seen = follower
    startup = json.loads(seen[-1])
    assert startup["groups_topic"] == f"{topic}-groups"
    assert startup["alerts_topic"] == f"{topic}-alerts"
    assert startup["kafka_client"] == "kafka-python"

    # answered before torch is imported or any lock is waited for (-X importtime shows it)
    retrain = subprocess.run([sys.executable, "-X", "importtime", *CLI[1:], "retrain",
                              "--state-dir", str(state), "--run-id", "handed", "--json"],
                             env=ENV, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert retrain.returncode == 6, retrain.stderr[-2000:]
    assert "handed to it" in retrain.stderr
    assert json.loads(retrain.stdout)["status"] == "handed_off"
    assert "| torch\n" not in retrain.stderr and "| transformers\n" not in retrain.stderr

    wait_for(proc, lambda line: "round handed:" in line and '"stage": "done"' in line)
    run = Registry(TrainerPaths(state).registry).run("handed")
    assert run is not None and run["status"] in ("promoted", "kept"), run
    assert run["trigger"] == "manual"

    proc.send_signal(15)
    assert proc.wait(timeout=60) == 0
