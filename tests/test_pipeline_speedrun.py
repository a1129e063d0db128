"""Smoke speedrun on the tiny preset: killed (SIGKILL) inside a training stage, then rerun with the same command; the
rerun skips finished stages, resumes the interrupted one from its checkpoint and finishes.

One test runs the r1-zero recipe (tokenizer → pretrain → eval → GRPO → eval) and kills it inside GRPO; the other
runs the whole speedrun recipe (26 stages, ~1 min) and kills it inside pretraining. Subprocesses use one thread
(OMP_NUM_THREADS=1): on 2 shared cores oversubscribed torch threads are many times slower.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def command(out: Path, recipe: str) -> list[str]:
    return [sys.executable, "-m", "r1lab.cli", "speedrun", "--smoke", "--recipe", recipe, "--out", str(out)]


def run_killed_then_resumed(out: Path, recipe: str, kill_when: Path, timeout: float = 600) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(command(out, recipe), cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    t0 = time.time()
    while not list(kill_when.parent.glob(kill_when.name)):
        if proc.poll() is not None:
            raise AssertionError("finished before the kill point:\n" + proc.stdout.read().decode()[-3000:])
        if time.time() - t0 > timeout:
            os.killpg(proc.pid, signal.SIGKILL)
            raise AssertionError("kill point never reached")
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    stage_dir = kill_when.parent.parent
    assert not (stage_dir / "DONE").exists(), "the stage finished before it was killed"
    again = subprocess.run(command(out, recipe), cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    return again.stdout


def test_tiny_r1_zero_killed_in_grpo_resumes_and_finishes(tmp_path):
    out = tmp_path / "run"
    log = run_killed_then_resumed(out, "r1-zero", out / "r1-zero" / "checkpoints" / "step-000001")
    assert "tokenizer: done already" in log and "pretrain: done already" in log
    assert "r1-zero (grpo): resuming" in log
    assert "step 1 | reward" not in log and "step 3 | reward" in log  # GRPO continued from its checkpoint
    done = json.loads((out / "eval-r1-zero" / "DONE").read_text())
    assert done["artifacts"]["k"] == 2 and 0.0 <= done["artifacts"]["pass@1"] <= 1.0
    # a third run has nothing left to do
    third = subprocess.run(command(out, "r1-zero"), cwd=ROOT, capture_output=True, text=True, timeout=120,
                           env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})
    assert third.returncode == 0 and third.stdout.count("done already") == 5


@pytest.mark.slow
def test_tiny_full_speedrun_killed_in_pretrain_resumes_and_reports(tmp_path):
    out = tmp_path / "run"
    # any pretraining checkpoint: older ones are pruned quickly (keep_last), so a fixed step can be missed
    run_killed_then_resumed(out, "speedrun", out / "pretrain" / "checkpoints" / "step-*")
    results = json.loads((out / "results.json").read_text())
    names = [s["name"] for s in results["stages"]]
    for name in ("base", "r1-zero", "r1", "distill-student", "rl-only-student"):
        assert name in names
    # every R1 stage has its own row, in recipe order, before the final model
    assert names[names.index("r1-zero") + 1: names.index("r1") + 1] == [
        "r1-cold-start-sft", "r1-reasoning-rl", "r1-rejection-sft", "r1"]
    assert (out / "report" / "report.md").exists() and list((out / "report").glob("rl_*.png"))
    # the findings read the eval stages' per-problem records: each measured gap comes with its paired SE
    report = (out / "report" / "report.md").read_text(encoding="utf-8")
    assert report.count("paired SE, ") >= 4, report
    assert "R1 stage by stage, pass@1 against the stage before: r1-cold-start-sft vs base: Δ" in report
    # benchmarks/language_mixing.py reads the finished run: one line per model, then the paired comparison
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "benchmarks/language_mixing.py", "--run", str(out), "--n-per-family", "1",
                          "--max-tokens", "8"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    lines = [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]
    assert [d.get("model") for d in lines[:3]] == ["base", "r1-zero", "r1"]
    assert all(d["samples"] == 8 and 0.0 <= d["mixing_rate"] <= 1.0 for d in lines[:3])
    assert lines[3]["compare"] == "r1-zero minus r1" and lines[3]["problems"] == 2
    # benchmarks/rl_stage_variance.sh redoes the final RL stage from r1-sft with the run's reward model, evaluates it
    # like eval-r1 and pairs it with eval-r1-sft's records
    res = subprocess.run(["bash", "benchmarks/rl_stage_variance.sh", str(out), "r1", "again", "--steps", "1"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    row = json.loads(res.stdout.splitlines()[-1])
    assert row["stage"] == "r1" and row["peer"] == "eval-r1-sft" and row["flags"] == "--steps 1"
    assert {"pass@1_delta", "pass@1_se", "cons@k_delta", "mixing_delta"} <= set(row), row
    metrics = [json.loads(line) for line in (out / "rl_stage_variance" / "r1" / "again" / "metrics.jsonl").open()]
    steps = [m for m in metrics if "reward" in m]
    assert len(steps) == 1 and "reward_r1lab.pipeline.reward_model:model_reward" in steps[0], metrics


def _alive(pid: int) -> bool:
    """Whether the process exists and is not a zombie (a container's init may not reap orphans)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


@pytest.mark.slow
def test_tiny_speedrun_side_lane_dies_with_its_parent_and_resumes(tmp_path):
    """--jobs 2: the student's stages run in a second process. SIGKILL of the main process alone (no process-group
    kill) inside the student's pretraining takes the side process down too (PR_SET_PDEATHSIG), and the same command
    resumes both lanes and finishes."""
    out = tmp_path / "run"
    cmd = [*command(out, "speedrun"), "--jobs", "2", "--set", "student-base.steps=40"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    first_log = tmp_path / "first.log"
    with first_log.open("wb") as sink:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)
        t0 = time.time()
        try:
            while not list((out / "student-base" / "checkpoints").glob("step-*")):
                assert proc.poll() is None, "finished before the kill point:\n" + first_log.read_text()[-3000:]
                assert time.time() - t0 < 300, "kill point never reached"
                time.sleep(0.02)
            os.kill(proc.pid, signal.SIGKILL)  # the main process only
            proc.wait()
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
    text = first_log.read_text()
    side_pid = int(text.split("in a second process (pid ")[1].split(",")[0])
    deadline = time.time() + 20
    while _alive(side_pid) and time.time() < deadline:
        time.sleep(0.1)
    assert not _alive(side_pid), "the side lane outlived its parent"
    assert not (out / "student-base" / "DONE").exists(), "the student finished before the kill"
    again = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "side lane [18/26] student-base (pretrain): resuming" in again.stdout
    resumed = (out / "side-lane.log").read_text().split("student-base (pretrain): resuming")[-1]
    assert "resumed from" in resumed and "no checkpoint" not in resumed  # from its checkpoint, not from step 0
    names = [s["name"] for s in json.loads((out / "results.json").read_text())["stages"]]
    assert {"distill-student", "rl-only-student", "r1"} <= set(names)
    assert json.loads((out / "student-base" / "DONE").read_text())["artifacts"]["steps"] == 40
