"""The speedrun: tokenizer → pretrain → R1-Zero → R1 → distillation → evaluation → report, in one resumable run.

Idea: nanochat's ``speedrun.sh`` (one command, the whole pipeline on the embedded data, a report at the end) applied
to DeepSeek-R1's pipeline (arXiv 2501.12948 §2): ``run(recipe="speedrun", preset="cpu", out="runs/speedrun")``.
Rerunning the same command resumes: finished stages (DONE marker) are skipped, the interrupted one continues from
its last checkpoint (``rundir``). Progress: one line per stage start/end with elapsed time, plus each stage's own bars.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from r1lab.pipeline.recipes import prepare
from r1lab.pipeline.rundir import run_recipe


def resolve_jobs(jobs: int | str, threads: int) -> int:
    """``jobs`` "auto": 2 (the recipe's side lane beside the main one) when generation and training run on the CPU
    with at least two torch threads, else 1. A GPU run keeps one stage at a time: its pretraining stages fit their
    step counts to a time budget, which a second process on the same GPU would shrink.

    >>> resolve_jobs(1, 8), resolve_jobs("2", 1), resolve_jobs("auto", 1)
    (1, 2, 1)
    """
    if str(jobs) == "auto":
        import torch

        return 2 if threads >= 2 and not torch.cuda.is_available() else 1
    n = int(jobs)
    if n not in (1, 2):
        raise ValueError(f"--jobs must be 1, 2 or auto, got {jobs!r}")
    return n


def run(out: str | Path, preset: str = "cpu", recipe: str = "speedrun", only: list[str] | None = None,
        threads: int = 0, overrides: dict[str, dict[str, Any]] | None = None,
        stop_after_min: float = 0.0, jobs: int | str = "auto") -> dict[str, dict[str, Any]]:
    """Validate the recipe (errors before anything runs), then run or resume it in ``out``; ``overrides`` are
    stage config changes on top of the preset (``recipes.parse_set``), recorded in run.json like the rest;
    ``stop_after_min`` > 0: start no new stage after that many minutes (for machines lent in time slices);
    ``jobs``: 2 runs the recipe's side lane in a second process (``r1lab.pipeline.lanes``), "auto" = 2 on a CPU
    with two or more threads (``resolve_jobs``)."""
    import torch

    from r1lab.pipeline.presets import EXPECTED_SECONDS, MEASURED_RUN_SECONDS
    from r1lab.pipeline.stages import runners

    resolved = prepare(recipe, preset, overrides)
    if threads:
        torch.set_num_threads(threads)
    n_jobs = resolve_jobs(jobs, torch.get_num_threads())
    t0 = time.time()
    lane = resolved.side if n_jobs == 2 and only is None else None
    print(f"r1lab {recipe}: preset {preset}, {len(resolved.stages)} stages → {out}"
          + (f"; {', '.join(lane.stages)} in a second process from {lane.after} to {lane.join} (--jobs 2)"
             if lane else ""), flush=True)
    expected = EXPECTED_SECONDS.get(preset) if recipe == "speedrun" else None
    if expected and preset in MEASURED_RUN_SECONDS:
        print(f"r1lab {recipe}: the {preset} preset took {MEASURED_RUN_SECONDS[preset] / 60:.0f} min in the run "
              "measured in r1lab/pipeline/presets.py; each finished stage re-estimates the rest for this machine",
              flush=True)
    done = run_recipe(resolved, preset, out, runners(), only=only, stop_after_s=60.0 * stop_after_min,
                      expected_s=expected, jobs=n_jobs)
    print(f"r1lab {recipe}: finished in {time.time() - t0:.0f}s (this invocation)", flush=True)
    print(summary_table(done), flush=True)
    return done


def summary_table(done: dict[str, dict[str, Any]]) -> str:
    """Wall time per stage, and pass@1 / cons@k of the evaluated ones."""
    lines = [f"{'stage':<22}{'wall s':>9}{'pass@1':>9}{'cons@k':>9}{'mixing':>8}"]
    for name, rec in done.items():
        art = rec.get("artifacts", {})
        extra = (f"{art['pass@1']:>9.3f}{art['cons@k']:>9.3f}{art['language_mixing_rate']:>8.3f}"
                 if "pass@1" in art else "")
        lines.append(f"{name:<22}{rec['wall_seconds']:>9.1f}{extra}")
    lines.append(f"{'sum of stages':<22}{sum(r['wall_seconds'] for r in done.values()):>9.1f}")
    return "\n".join(lines)
