"""A side lane: stages that do not depend on the main lane run in a second process beside it, the cores split.

Idea: one process uses a small CPU's cores poorly (the matmuls are small): on 2 cores a second thread makes a
cpu-demo pretraining step only ~1.5× faster, while two 1-thread processes hardly slow each other down —
``benchmarks/cpu_lanes.py``: the teacher's and the student's pretraining side by side do 1.25× the work per second of
the two one after the other with 2 threads each (docs/benchmarks.md, twenty-third session). The speedrun's dense
student (its pretraining, RL-only training and evaluation) needs nothing of the teacher's R1 stages, so the recipe
names it a side lane (``recipes.SideLane``). Once the lane's ``after`` stage is done, a child process runs
the lane's stages with ``side_threads`` torch threads, and the main lane's stages up to ``join`` run with the
remaining threads (and as many generation workers); the main lane waits for the child before ``join``.

Deterministic: which stage runs with how many threads is fixed by the plan (a main-lane stage between ``after`` and
``join`` always gets the reduced count, whether or not the child is still running), never by which lane happens to
be faster, so a run repeats itself on one machine. Thread counts change float rounding: the stages before the window
train exactly as with ``--jobs 1`` (the speedrun's pretraining matched the twenty-second session's to the last digit),
the later ones differ from it by rounding (``--jobs 2`` is the default on a CPU with two or more threads).

Nothing is orphaned: the child asks the kernel for SIGTERM when its parent dies (Linux ``PR_SET_PDEATHSIG``) and the
parent terminates it on any exception, so a killed run leaves no process writing into the run directory; rerunning
the same command resumes both lanes from their checkpoints (``rundir``). The child's output goes to
``run_dir/side-lane.log``; the parent relays its stage start/done lines between its own stages and while it waits.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import re
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

LOG = "side-lane.log"
STAGE_LINE = re.compile(r"^\[\d+/\d+\] ([\w.-]+)[ :]")  # rundir's per-stage start / done / skipped lines
PR_SET_PDEATHSIG = 1


def split_threads(total: int) -> tuple[int, int]:
    """(main lane, side lane) torch threads while both run: the side gets half, at least one each.

    >>> split_threads(2), split_threads(4), split_threads(5), split_threads(1)
    ((1, 1), (2, 2), (3, 2), (1, 1))
    """
    side = max(1, total // 2)
    return max(1, total - side), side


def _set_threads(n: int) -> None:
    """``torch.set_num_threads(n)`` only when the count changes: the call itself, even with torch's default count, turns
    MKL's dynamic threading off and changes float rounding (and made a cpu-demo pretraining step ~10 % slower on 2
    threads), so the stages before the lane's window train exactly as with ``--jobs 1``."""
    import torch

    if torch.get_num_threads() != n:
        torch.set_num_threads(n)


def _die_with_parent() -> None:
    """Ask for SIGTERM when the parent process dies (Linux only; elsewhere the parent's own cleanup must do)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM))
    except (OSError, AttributeError):  # pragma: no cover - not Linux
        return
    if os.getppid() == 1:  # the parent died before the request took effect
        os._exit(1)


def _child(recipe: Any, preset: str, run_dir: str, stages: list[str], threads: int,
           runners: dict[str, Callable[..., Any]], stop_after_s: float) -> None:
    """The side process: its output into the lane's log, ``threads`` torch threads, the lane's stages only."""
    _die_with_parent()
    fd = os.open(Path(run_dir) / LOG, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    sys.stdout.reconfigure(line_buffering=True)
    sys.stderr.reconfigure(line_buffering=True)
    fresh_line = "\n" if os.fstat(fd).st_size else ""  # an earlier, killed child may have left half a line
    print(f"{fresh_line}side lane: pid {os.getpid()}, {threads} torch thread(s), stages {', '.join(stages)}",
          flush=True)
    import torch

    from r1lab.pipeline.rundir import run_recipe

    torch.set_num_threads(threads)
    run_recipe(recipe, preset, run_dir, runners, only=stages, stop_after_s=stop_after_s, run_clock=False)


class SideLane:
    """The side lane of one ``run_recipe`` call: the thread plan, the child process, its log relay and the join."""

    def __init__(self, recipe: Any, preset: str, run_dir: Path, runners: dict[str, Callable[..., Any]],
                 log: Callable[[str], None], deadline: float = 0.0) -> None:
        import torch

        assert recipe.side is not None
        self.spec = recipe.side
        self.recipe, self.preset, self.run_dir, self.runners = recipe, preset, run_dir, runners
        self.total = torch.get_num_threads()
        self.main_threads, self.side_threads = split_threads(self.total)
        self.log = log
        self.deadline = deadline  # time.time() after which no stage may start (--stop-after); 0 = none
        self.proc: mp.process.BaseProcess | None = None
        self.joined = False
        self._offset = 0

    def in_window(self, done: dict[str, Any]) -> bool:
        """Whether a main-lane stage run now shares the cores (the lane's ``after`` done, its ``join`` not reached)."""
        return self.spec.after in done and not self.joined

    def set_threads(self, done: dict[str, Any]) -> None:
        """Torch threads for the next main-lane stage, by the plan (see the module docstring)."""
        _set_threads(self.main_threads if self.in_window(done) else self.total)

    def restore_threads(self) -> None:
        _set_threads(self.total)

    def maybe_start(self, done: dict[str, Any]) -> None:
        """Start the child once ``after`` is done, unless every lane stage is finished already."""
        if self.proc is not None or self.joined or self.spec.after not in done:
            return
        from r1lab.pipeline.rundir import read_done

        todo = [s for s in self.spec.stages if read_done(self.run_dir / s) is None]
        left_s = self.deadline - time.time() if self.deadline else 0.0
        if not todo or (self.deadline and left_s <= 0):
            return
        ctx = mp.get_context("spawn")
        self.proc = ctx.Process(target=_child, name="r1lab-side-lane", args=(
            self.recipe, self.preset, str(self.run_dir), todo, self.side_threads, self.runners, left_s))
        self._offset = (self.run_dir / LOG).stat().st_size if (self.run_dir / LOG).exists() else 0
        self.proc.start()
        self.log(f"side lane: {', '.join(todo)} in a second process (pid {self.proc.pid}, {self.side_threads} "
                 f"thread(s); this one {self.main_threads} until {self.spec.join}) → {self.run_dir / LOG}")

    def relay(self) -> None:
        """Print the child's new stage lines (start / done / skipped), marked as the side lane's."""
        path = self.run_dir / LOG
        if self.proc is None or not path.exists():
            return
        with path.open("rb") as f:
            f.seek(self._offset)
            data = f.read()
        end = data.rfind(b"\n") + 1  # whole lines only; the rest is read next time
        self._offset += end
        for line in data[:end].decode("utf-8", "replace").splitlines():
            m = STAGE_LINE.match(line)
            if m and m.group(1) in self.spec.stages:  # not the "done already" lines of the main lane's stages
                self.log(f"  side lane {line}")

    def join(self, poll_s: float = 5.0) -> None:
        """Wait for the child (relaying its progress); raise with the log's tail when it failed."""
        if self.proc is not None:
            if self.proc.is_alive():
                self.log(f"waiting for the side lane before {self.spec.join}")
            while self.proc.is_alive():
                self.proc.join(poll_s)
                self.relay()
            self.relay()
            code = self.proc.exitcode
            self.proc = None
            if code != 0:
                tail = (self.run_dir / LOG).read_text(encoding="utf-8", errors="replace").splitlines()[-30:]
                raise RuntimeError(f"the side lane failed (exit code {code}); the end of {self.run_dir / LOG}:\n"
                                   + "\n".join(tail))
        self.joined = True

    def records(self) -> dict[str, Any]:
        """The lane stages' DONE records after ``join``; an error naming the first stage the lane did not finish."""
        from r1lab.pipeline.rundir import read_done

        out = {}
        for name in self.spec.stages:
            if (rec := read_done(self.run_dir / name)) is None:
                raise RuntimeError(f"the side lane ended without finishing {name!r} (see {self.run_dir / LOG})")
            out[name] = rec
        return out

    def stop(self) -> None:
        """Terminate the child if it still runs (the main lane failed or was interrupted); its stages resume on the
        next run."""
        if self.proc is not None and self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(30)
            if self.proc.is_alive():  # pragma: no cover - ignored SIGTERM
                self.proc.kill()
        self.proc = None
