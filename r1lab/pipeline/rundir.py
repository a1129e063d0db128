"""The run directory as a resumable state machine: one folder per stage, a DONE marker written last, run.json.

Idea: the layout habit "stages talk through files in the run directory, so each can be rerun, resumed or replaced
alone" (nanochat / torchtitan style). Protocol:

- ``run_dir/run.json`` records the recipe name, preset, config hash and resolved stages. Running a different recipe
  or preset (or changed configs) in an existing run directory is refused with what differs (``RunDirMismatch``).
- Stage ``s`` writes everything into ``run_dir/s/``; when it finishes, ``run_dir/s/DONE`` (JSON: wall seconds,
  finish time, artifacts) is written last, atomically. A stage with DONE is skipped on rerun.
- A stage without DONE is (re)started with ``resume=True``: trainers continue from their last checkpoint in the
  stage folder; cheap stages simply redo their work. Wall time accumulates across attempts: ``run_dir/s/WALL``
  holds the seconds spent so far, refreshed every few seconds by a background thread while the stage runs.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from r1lab.pipeline.recipes import Recipe, RecipeError, config_hash

DONE = "DONE"
WALL = "WALL"
RUN_JSON = "run.json"


class RunDirError(ValueError):
    """A run directory that cannot be used as it is (e.g. an unreadable run.json); the message names the file."""


class RunDirMismatch(RunDirError):
    """The run directory was made by another recipe / preset / config; the message says what differs."""


RUN_KEYS = ("recipe", "preset", "config_hash", "stages")


def read_json_record(path: Path) -> Any:
    """The JSON in ``path`` (run.json, a DONE marker), or RunDirError naming the file when it is not valid JSON."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise RunDirError(f"{path}: not valid JSON (line {err.lineno}: {err.msg}); the file is corrupt — restore it, "
                          "or start again in a new --out") from None
    except UnicodeDecodeError as err:
        raise RunDirError(f"{path}: not UTF-8 text ({err.reason}); the file is corrupt") from None


def read_run_json(run_dir: str | Path) -> dict[str, Any]:
    """``run_dir/run.json``: an object with recipe, preset, config_hash and a list of stages (each with a name and a
    kind), else RunDirError naming the file and what is wrong."""
    path = Path(run_dir) / RUN_JSON
    if not path.exists():
        raise RunDirError(f"{path} not found: {run_dir} is not a run directory (made by `r1lab speedrun`)")
    run = read_json_record(path)
    if not isinstance(run, dict):
        raise RunDirError(f"{path}: expected a JSON object, got {type(run).__name__}; the file is corrupt")
    missing = [key for key in RUN_KEYS if key not in run]
    if missing:
        raise RunDirError(f"{path}: missing {', '.join(missing)}; the file is corrupt or not a run record")
    stages = run["stages"]
    if not isinstance(stages, list) or not all(isinstance(st, dict) and "name" in st and "kind" in st
                                               for st in stages):
        raise RunDirError(f"{path}: 'stages' must be a list of objects with a name and a kind")
    return run


def check_only(recipe: Recipe, only: list[str] | None) -> None:
    """``--only`` names stages of ``recipe`` (at least one), else RecipeError naming the unknown ones and listing
    the recipe's stages: a misspelt name would otherwise run nothing and report success."""
    if only is None:
        return
    names = [st.name for st in recipe.stages]
    if not only:
        raise RecipeError(f"--only needs at least one stage name; recipe {recipe.name!r} has: {', '.join(names)}")
    unknown = [name for name in only if name not in names]
    if unknown:
        raise RecipeError(f"--only: {', '.join(map(repr, unknown))} {'is' if len(unknown) == 1 else 'are'} not a "
                          f"stage of recipe {recipe.name!r}; its stages: {', '.join(names)}")


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON via a temp file in the same folder and an atomic rename."""
    from r1lab.data.stream import write_text_atomic

    write_text_atomic(path, json.dumps(data, indent=2, default=str) + "\n")


def describe_mismatch(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Human-readable differences between two run.json records."""
    diffs = [f"{key}: run dir has {saved.get(key)!r}, asked for {current.get(key)!r}"
             for key in ("recipe", "preset") if saved.get(key) != current.get(key)]
    old = {s["name"]: s for s in saved.get("stages", [])}
    new = {s["name"]: s for s in current.get("stages", [])}
    for name in [n for n in new if n not in old]:
        diffs.append(f"stage {name!r}: not in the run dir")
    for name in [n for n in old if n not in new]:
        diffs.append(f"stage {name!r}: in the run dir but not asked for")
    for name in [n for n in new if n in old]:
        a, b = old[name], new[name]
        for part in ("kind", "inputs"):
            if a.get(part) != b.get(part):
                diffs.append(f"stage {name!r} {part}: {a.get(part)!r} → {b.get(part)!r}")
        ca, cb = a.get("config", {}), b.get("config", {})
        for key in sorted(set(ca) | set(cb)):
            if ca.get(key) != cb.get(key):
                diffs.append(f"stage {name!r} field {key!r}: {ca.get(key)!r} → {cb.get(key)!r}")
    return diffs


def run_record(recipe: Recipe, preset: str) -> dict[str, Any]:
    return {"recipe": recipe.name, "preset": preset, "config_hash": config_hash(recipe),
            "stages": json.loads(json.dumps([s.to_dict() for s in recipe.stages], default=str))}


def claim_run_dir(run_dir: Path, recipe: Recipe, preset: str) -> dict[str, Any]:
    """Create run.json, or check that the existing one matches (else RunDirMismatch naming the differences)."""
    record = run_record(recipe, preset)
    path = run_dir / RUN_JSON
    if path.exists():
        saved = read_run_json(run_dir)
        if saved.get("config_hash") != record["config_hash"] or saved.get("recipe") != recipe.name \
                or saved.get("preset") != preset:
            diffs = describe_mismatch(saved, record) or ["config hash differs"]
            raise RunDirMismatch(f"{run_dir} belongs to another run; use a new --out or the same recipe/preset. "
                                 "Differences:\n  " + "\n  ".join(diffs))
        return saved
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, record)
    return record


def read_done(stage_dir: Path) -> dict[str, Any] | None:
    """The DONE record of a finished stage, or None."""
    path = stage_dir / DONE
    if not path.exists():
        return None
    return read_json_record(path)


class WallClock:
    """Accumulates a stage's wall time across attempts in ``stage_dir/WALL`` (refreshed every ``every`` s)."""

    def __init__(self, stage_dir: Path, every: float = 2.0) -> None:
        self.path = stage_dir / WALL
        self.before = float(self.path.read_text()) if self.path.exists() else 0.0
        self.t0 = time.time()
        self.every = every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def total(self) -> float:
        return self.before + time.time() - self.t0

    def _write(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(f"{self.total():.3f}")
        os.replace(tmp, self.path)

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            self._write()

    def __enter__(self) -> WallClock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self._write()


@dataclass
class StageContext:
    """What a stage runner gets: its spec's config (a dict), its folder, resolved inputs, the run's settings."""

    name: str
    kind: str
    config: dict[str, Any]
    out_dir: Path
    run_dir: Path
    preset: str
    inputs: dict[str, dict[str, Any]] = field(default_factory=dict)  # role → DONE["artifacts"] of that stage
    input_dirs: dict[str, Path] = field(default_factory=dict)  # role → that stage's folder
    resume: bool = True


Runner = Callable[[StageContext], dict[str, Any]]


def eta_seconds(expected_s: dict[str, float], ran: dict[str, float], left: list[str]) -> float | None:
    """Seconds the stages in ``left`` should take on this machine: their reference times (``expected_s``, measured
    on a reference machine) × how much slower or faster the stages that ``ran`` here were than theirs. None when
    nothing comparable has run yet. Stages missing from ``expected_s`` count as 0.

    >>> eta_seconds({"a": 100.0, "b": 50.0, "c": 30.0}, {"a": 175.0}, ["b", "c"])  # a ran 1.75x slower
    140.0
    >>> eta_seconds({"a": 100.0}, {}, ["a"]) is None
    True
    """
    ref = sum(expected_s.get(name, 0.0) for name in ran)
    if ref <= 0:
        return None
    return sum(ran.values()) / ref * sum(expected_s.get(name, 0.0) for name in left)


def run_recipe(recipe: Recipe, preset: str, run_dir: str | Path, runners: dict[str, Runner],
               log: Callable[[str], None] = print, only: list[str] | None = None,
               stop_after_s: float = 0.0, expected_s: dict[str, float] | None = None, jobs: int = 1,
               run_clock: bool = True) -> dict[str, dict[str, Any]]:
    """Run (or resume) every stage in order; returns stage name → DONE record. ``stop_after_s`` > 0: start no new
    stage once this invocation has run that long (the records so far are returned; rerunning continues).
    ``expected_s``: each stage's wall seconds on a reference machine; each "done" line then adds the time the
    remaining stages should take here (``eta_seconds``). ``jobs`` = 2: the recipe's side lane (if it has one, and
    ``only`` is not given) runs in a second process beside the main lane (``r1lab.pipeline.lanes``).
    ``run_clock``: accumulate the run's own wall time in ``run_dir/WALL`` (off in the side lane's process)."""
    run_dir = Path(run_dir)
    check_only(recipe, only)  # before run.json is written
    claim_run_dir(run_dir, recipe, preset)
    lane = None
    if jobs >= 2 and recipe.side is not None and only is None:
        from r1lab.pipeline.lanes import SideLane

        deadline = time.time() + stop_after_s if stop_after_s > 0 else 0.0
        lane = SideLane(recipe, preset, run_dir, runners, log, deadline)
    with WallClock(run_dir) if run_clock else contextlib.nullcontext():
        try:
            done = _run_stages(recipe, preset, run_dir, runners, log, only, stop_after_s, expected_s, lane)
        except BaseException:
            if lane is not None:
                lane.stop()
            raise
        finally:
            if lane is not None:
                lane.restore_threads()
    return done


def _run_stages(recipe: Recipe, preset: str, run_dir: Path, runners: dict[str, Runner], log: Callable[[str], None],
                only: list[str] | None, stop_after_s: float, expected_s: dict[str, float] | None,
                lane: Any) -> dict[str, dict[str, Any]]:
    t_run = time.time()
    done: dict[str, dict[str, Any]] = {}
    ran: dict[str, float] = {}  # stages run to the end by this invocation → their wall seconds here
    earlier = {s.name: r for s in recipe.stages if (r := read_done(run_dir / s.name)) is not None}  # DONE before
    side = set(lane.spec.stages) if lane is not None else set()
    n = len(recipe.stages)
    for i, spec in enumerate(recipe.stages, start=1):
        stage_dir = run_dir / spec.name
        if lane is not None:
            lane.maybe_start(done)
            lane.relay()
            if spec.name in side:  # the side lane's process runs it
                continue
            if spec.name == lane.spec.join:
                lane.join()
                done.update(lane.records())
            lane.set_threads(done)
        record = earlier.get(spec.name)
        if record is not None:
            done[spec.name] = record
            log(f"[{i}/{n}] {spec.name}: done already ({record['wall_seconds']:.1f}s) - skipped")
            continue
        if only is not None and spec.name not in only:
            continue
        if stop_after_s > 0 and time.time() - t_run >= stop_after_s:
            log(f"[{i}/{n}] stopping before {spec.name}: {time.time() - t_run:.0f}s ≥ --stop-after "
                f"{stop_after_s / 60:g} min; run the same command again to continue")
            break
        missing = [src for src in spec.inputs.values() if src not in done]
        if missing:
            raise RuntimeError(f"stage {spec.name!r} needs {missing}, which did not finish")
        ctx = StageContext(
            name=spec.name, kind=spec.kind, config=dict(spec.config), out_dir=stage_dir, run_dir=run_dir,
            preset=preset, inputs={role: done[src].get("artifacts", {}) for role, src in spec.inputs.items()},
            input_dirs={role: run_dir / src for role, src in spec.inputs.items()})
        attempt = "resuming" if stage_dir.exists() and any(stage_dir.iterdir()) else "start"
        log(f"[{i}/{n}] {spec.name} ({spec.kind}): {attempt} | run elapsed {time.time() - t_run:.0f}s")
        with WallClock(stage_dir) as clock:
            artifacts = runners[spec.kind](ctx)
        record = {"stage": spec.name, "kind": spec.kind, "wall_seconds": round(clock.total(), 3),
                  "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                  "artifacts": json.loads(json.dumps(artifacts or {}, default=str))}
        write_json_atomic(stage_dir / DONE, record)
        done[spec.name] = record
        if attempt == "start":
            ran[spec.name] = record["wall_seconds"]
        left = [s.name for s in recipe.stages[i:] if s.name not in earlier and (only is None or s.name in only)
                and s.name not in side]
        eta = eta_seconds(expected_s or {}, ran, left) if left else None
        log(f"[{i}/{n}] {spec.name}: done in {record['wall_seconds']:.1f}s | run elapsed {time.time() - t_run:.0f}s"
            + (f" | about {eta / 60:.0f} min to go" if eta is not None else ""))
    if lane is not None and not lane.joined:  # stopped early (--stop-after): let the side lane's stage finish too
        lane.join()
    return done
