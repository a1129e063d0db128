"""The side lane (r1lab/pipeline/lanes.py): which stages run in the second process and with how many threads, the
join, failures, and the recipe checks. Stage runners here are module-level functions, so the spawned child can
import them; each returns its process id, torch's thread count and times, which the tests read from DONE."""

from __future__ import annotations

import dataclasses
import os
import time

import pytest
import torch

from r1lab.pipeline import recipes
from r1lab.pipeline.recipes import Recipe, RecipeError, SideLane, StageSpec, validate_side_lane
from r1lab.pipeline.rundir import read_done, run_recipe


def record_runner(ctx):
    """Fake stage: sleeps ``ctx.config["sleep"]`` seconds (or fails when "fail" is set); reports where it ran."""
    start = time.time()
    if ctx.config.get("fail"):
        raise ValueError(f"stage {ctx.name} fails on purpose")
    time.sleep(ctx.config.get("sleep", 0.0))
    ctx.out_dir.mkdir(parents=True, exist_ok=True)
    return {"pid": os.getpid(), "threads": torch.get_num_threads(), "start": start, "end": time.time(),
            "workers_env": os.environ.get("R1LAB_WORKERS")}


RUNNERS = {"tokenizer": record_runner, "pretrain": record_runner, "eval": record_runner, "sft": record_runner}


def lane_recipe(side_cfg=None) -> Recipe:
    """tok → base (after) → m1, m2 (main, inside the window) → join (reads the lane) → end; lane: s1 → s2."""
    S = StageSpec
    side_cfg = side_cfg or {"sleep": 1.5}
    return Recipe("lanes", "test", (
        S("tok", "tokenizer"), S("base", "pretrain", {}, {"tokenizer": "tok"}),
        S("m1", "eval", {"sleep": 0.2}, {"model": "base"}),
        S("s1", "pretrain", side_cfg, {"tokenizer": "tok"}),
        S("s2", "eval", {}, {"model": "s1"}),
        S("m2", "eval", {}, {"model": "base"}),
        S("join", "sft", {}, {"model": "base", "data": "s2"}),
        S("end", "eval", {}, {"model": "join"}),
    ), SideLane(("s1", "s2"), after="base", join="join"))


@pytest.fixture
def four_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(4)
    yield
    torch.set_num_threads(before)


def test_side_lane_runs_in_a_second_process_with_the_planned_threads(tmp_path, four_threads):
    lines: list[str] = []
    done = run_recipe(lane_recipe(), "tiny", tmp_path / "run", RUNNERS, log=lines.append, jobs=2)
    art = {name: rec["artifacts"] for name, rec in done.items()}
    assert list(done) == ["tok", "base", "m1", "m2", "s1", "s2", "join", "end"]
    me = os.getpid()
    assert {art[n]["pid"] for n in ("tok", "base", "m1", "m2", "join", "end")} == {me}
    assert art["s1"]["pid"] == art["s2"]["pid"] != me
    # threads by the plan: half for each lane inside the window (after base, before join), all outside it
    assert [art[n]["threads"] for n in ("tok", "base", "m1", "m2", "join", "end")] == [4, 4, 2, 2, 4, 4]
    assert art["s1"]["threads"] == art["s2"]["threads"] == 2
    # the lane starts once 'base' is done; m1 and m2 do not wait for it (s1 sleeps 1.5 s), 'join' does
    assert art["s1"]["start"] >= art["base"]["end"] and art["m2"]["end"] < art["s2"]["end"]
    assert art["join"]["start"] >= art["s2"]["end"]
    assert torch.get_num_threads() == 4  # restored
    assert any(x.startswith("side lane: s1, s2 in a second process (pid ") and "2 thread(s)" in x for x in lines)
    relayed = [x for x in lines if x.startswith("  side lane [")]
    assert relayed and all(" s1" in x or " s2" in x for x in relayed)
    assert any("s2: done in" in x for x in relayed)
    assert (tmp_path / "run" / "WALL").exists() and float((tmp_path / "run" / "WALL").read_text()) > 1.5

    # a rerun finds everything done: no second process
    lines.clear()
    again = run_recipe(lane_recipe(), "tiny", tmp_path / "run", RUNNERS, log=lines.append, jobs=2)
    assert {n: r["artifacts"] for n, r in again.items()} == art
    assert not any("second process" in x for x in lines)


def test_one_job_runs_the_lane_inline(tmp_path, four_threads):
    done = run_recipe(lane_recipe(), "tiny", tmp_path / "run", RUNNERS, log=lambda s: None, jobs=1)
    assert list(done) == [s.name for s in lane_recipe().stages]
    assert {r["artifacts"]["pid"] for r in done.values()} == {os.getpid()}
    assert {r["artifacts"]["threads"] for r in done.values()} == {4}


def test_a_failing_side_lane_stops_the_run_with_its_log(tmp_path, four_threads):
    run_dir = tmp_path / "run"
    with pytest.raises(RuntimeError, match=r"side lane failed \(exit code 1\)[\s\S]*stage s1 fails on purpose"):
        run_recipe(lane_recipe({"fail": True}), "tiny", run_dir, RUNNERS, log=lambda s: None, jobs=2)
    assert read_done(run_dir / "m2") is not None and read_done(run_dir / "join") is None
    assert torch.get_num_threads() == 4


def test_a_failing_main_lane_terminates_the_side_process(tmp_path, four_threads):
    recipe = lane_recipe({"sleep": 60.0})
    stages = tuple(dataclasses.replace(s, config={"fail": True}) if s.name == "m2" else s for s in recipe.stages)
    recipe = dataclasses.replace(recipe, stages=stages)
    t0 = time.time()
    lines: list[str] = []
    with pytest.raises(ValueError, match="stage m2 fails on purpose"):
        run_recipe(recipe, "tiny", tmp_path / "run", RUNNERS, log=lines.append, jobs=2)
    assert time.time() - t0 < 30  # did not wait for the sleeping side stage
    pid = int(next(x for x in lines if "second process" in x).split("(pid ")[1].split(",")[0])
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # terminated and reaped
    assert read_done(tmp_path / "run" / "s1") is None


def test_side_lane_checks():
    good = lane_recipe()
    validate_side_lane(good)
    for lane, match in [
        (SideLane(("s1", "nope"), "base", "join"), "'nope' is not a stage"),
        (SideLane(("s1", "s2"), "join", "base"), "after='join' must come before join='base'"),
        (SideLane(("s1", "s2"), "s1", "join"), "must be main-lane stages"),
        (SideLane(("s2",), "base", "join"), "'s2' reads 's1', which is not done by 'base'"),
        (SideLane(("s1", "s2"), "base", "end"), "main-lane stage 'join' reads lane stage 's2' before join='end'"),
    ]:
        with pytest.raises(RecipeError, match=match):
            validate_side_lane(dataclasses.replace(good, side=lane))
    # the built-in lane: the dense student's own line, from the teacher's pretraining to its samples
    for name in ("distill", "speedrun"):
        lane = recipes.prepare(name, "cpu").side
        assert lane is not None and lane.stages == ("student-base", "rl-only-student", "eval-rl-only-student")
