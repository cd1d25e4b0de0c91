"""End to end on the simulator's stream:

simulator -> `distill serve` -> teacher groups (groups topic and archive) ->
`distill train --follow` buffers the topic, bootstraps the reference from a tiny real
student and starts an APO round, and is killed with SIGKILL while it trains: the registry
holds only complete models -> `distill retrain` runs one real round (synthesis,
Plackett-Luce steps, evaluation gate) to the end -> the new version loads with
``AutoModelForCausalLM``; rerunning the run id does nothing; rollback moves the pointer back.

`serve`, `train` and the reruns are subprocesses; the `retrain` that trains runs the same
click command in this process, where torch is already imported (~10 s saved).
"""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
import threading
import time
from itertools import islice
from pathlib import Path

import pytest

from distill.trainer.buffer import GroupBuffer
from distill.trainer.registry import Registry, registry_summary
from distill.trainer.round import TrainerPaths
from stream.kafka import KafkaSettings, KafkaSink
from stream.simulator import generate, load_scenario, produce

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = 36
TEACHERS = 7
NEW_GROUPS = 8
FAST_ROUND = ["--steps", "3", "--max-new-groups", str(NEW_GROUPS), "--replay-fraction", "0",
              "--apo", "max_length=128", "--apo", "max_prompt_length=64",
              "--apo", "synthesis_max_new_tokens=8", "--apo", "bootstrap_max_steps=2",
              "--apo", "learning_rate=0.001"]


def distill(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run([sys.executable, "-c", "from distill.cli import main; main()", *args],
                          capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)


def distill_here(*args: str) -> subprocess.CompletedProcess[str]:
    """The same command in this process (torch is already imported here: ~10 s saved)."""
    from click.testing import CliRunner

    from distill.cli import main

    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return subprocess.CompletedProcess(args, result.exit_code, result.stdout, result.stderr)


def write_config(path: Path, topic: str) -> Path:
    path.write_text(f"""
[kafka]
input_topic = "{topic}-in"
dead_letter_topic = "{topic}-dlq"
alerts_topic = "{topic}-alerts"
groups_topic = "{topic}-groups"
group_id = "{topic}-monitor"
partitions = 2

[train]
group_id = "{topic}-trainer"
probe_fraction = 0.15
""")
    return path


@pytest.fixture(scope="module")
def tiny_student(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from distill.apo.tiny import build_tiny_student

    events = islice(generate(load_scenario("default"), seed=1), 350)
    texts = [t for e in events for t in (e.prompt or "", e.output)]
    return build_tiny_student(tmp_path_factory.mktemp("student") / "tiny", texts)


@pytest.mark.broker
@pytest.mark.train
@pytest.mark.slow
def test_retrain_runs_end_to_end_on_groups_from_serve(
        tmp_path: Path, tiny_student: Path, kafka_settings: KafkaSettings, topic: str) -> None:
    cfg = write_config(tmp_path / "distill.toml", topic)
    state = tmp_path / "state"
    servers = kafka_settings.bootstrap_servers
    sink = KafkaSink(kafka_settings)
    events = SAMPLES * TEACHERS
    produce(islice(generate(load_scenario("default"), seed=0), events), sink, f"{topic}-in")
    sink.close()

    # 1. the monitor turns the teacher stream into groups (topic + archive)
    serve = distill("serve", "--config", str(cfg), "--bootstrap-servers", servers,
                    "--state-dir", str(state), "--metrics-address", "127.0.0.1:0",
                    "--max-records", str(events), "--idle-exit", "2")
    assert serve.returncode == 0, serve.stderr[-3000:]
    assert list((state / "archive").iterdir())

    # 2. `distill train --follow` consumes the groups topic into its durable buffer,
    #    bootstraps the reference and starts a round; it is killed (-9) while it trains
    follow = subprocess.Popen(
        [sys.executable, "-c", "from distill.cli import main; main()", "train", "--follow",
         "--config", str(cfg), "--bootstrap-servers", servers, "--state-dir", str(state),
         "--student", str(tiny_student), "--metrics-address", "127.0.0.1:0",
         "--trigger-every-groups", "8", *FAST_ROUND],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert follow.stderr is not None
    watchdog = threading.Timer(240, follow.kill)  # never hang the suite
    watchdog.start()
    seen = []
    for line in follow.stderr:
        seen.append(line)
        if re.search(r"distill\.trainer\.progress: round count-\S+: train ", line):
            break  # the reference is committed and the APO round has begun
    watchdog.cancel()
    time.sleep(random.Random(5).uniform(0.0, 1.0))  # somewhere inside the round
    follow.kill()
    follow.wait()
    assert any(": train " in line for line in seen), "".join(seen)[-3000:]
    paths = TrainerPaths(state)
    reg = Registry(paths.registry)  # what a restarted trainer sees
    assert [v.version for v in reg.versions()] == ["v0001"] and reg.verify("v0001")
    assert reg.current().version == "v0001"
    [run] = reg.snapshot()["runs"].values()
    assert run["status"] == "running" and run["trigger"] == "count"
    assert not [p for p in (paths.registry / "models").iterdir() if p.name != "v0001"]
    with GroupBuffer(paths.buffer) as buf:
        counts = buf.counts()
    assert counts.train + counts.probe >= SAMPLES - 2  # the last samples may still be open
    assert counts.probe >= 1

    # 3. one round by hand on the same groups: the reference is reused, the archive holds
    #    the groups the topic delivered, and the round runs to the end
    retrain = distill_here("retrain", "--config", str(cfg), "--state-dir", str(state),
                           "--run-id", "e2e-1", "--json", "--no-progress", *FAST_ROUND)
    assert retrain.returncode == 0, retrain.stderr[-3000:]
    assert "bootstrap:" not in retrain.stderr
    assert "(0 imported from" in retrain.stderr
    outcome = json.loads(retrain.stdout)
    assert outcome["status"] in ("promoted", "kept"), outcome
    assert outcome["groups"] == min(NEW_GROUPS, counts.train)
    m = outcome["metrics"]
    assert m["steps"] == 3 and m["loss"] > 0 and "eval_agreement" in m
    assert "current_eval_agreement" in m and m["eval_n_probe"] == counts.probe

    reg = Registry(paths.registry)
    assert reg.reference().version == "v0001"
    assert reg.get(outcome["version"]).parent == "v0001"
    current = reg.current()
    assert reg.verify(current.version)
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(reg.model_dir(current))
    assert sum(p.numel() for p in model.parameters()) > 0

    # 4. the same run id again: answered from the registry, nothing trained
    again = distill("retrain", "--config", str(cfg), "--state-dir", str(state),
                    "--run-id", "e2e-1", "--json", "--no-progress")
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads(again.stdout)["reused"] is True
    assert len(Registry(paths.registry).versions()) == len(reg.versions())

    # 5. rollback, visible to `distill status`
    if outcome["status"] == "promoted":
        back = distill("retrain", "--state-dir", str(state), "--rollback", "parent")
        assert back.returncode == 0, back.stderr
        assert registry_summary(state)["current"] == "v0001"
    assert registry_summary(state)["runs"][-1]["run_id"] == "e2e-1"
