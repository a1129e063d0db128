"""Wall-clock budgets for training loops: fit the number of optimizer steps to the minutes a run may take.

A preset meant for "any GPU" cannot fix a step count: the same 20 minutes are 3,000 steps on one card and 9,000 on
another. With a budget the loop runs a few steps, measures how long a step takes, and from then on trains for the
step count that fits (never more than the configured maximum); the LR and γ schedules follow the fitted count, so the
run still ends with a full decay. A hard stop guards the end: a run that is later than ``overrun`` × budget (slow
evals, a busy machine) stops and saves what it has.

``StepBudget`` is the whole policy; the loop calls ``record(step_time)`` after each step and ``fitted(...)`` when it
may change its step count. Pure apart from the clock, which the caller passes in.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field


def fit_steps(step: int, elapsed_s: float, step_s: float, budget_s: float, max_steps: int,
              margin: float = 0.05) -> int:
    """The step count that ends within ``budget_s`` (less a ``margin`` share kept for evals and saving), given that
    ``step`` steps are done after ``elapsed_s`` seconds and each further step takes ``step_s`` seconds; at least
    ``step + 1``, at most ``max_steps``.

    >>> fit_steps(25, 30.0, 0.5, 600.0, 10_000)      # (570 - 30) / 0.5 = 1080 more steps
    1105
    >>> fit_steps(25, 30.0, 0.5, 600.0, 800)          # the configured maximum wins
    800
    >>> fit_steps(25, 700.0, 0.5, 600.0, 10_000)      # already over: one more step
    26
    """
    if step_s <= 0:
        return max_steps
    left = budget_s * (1.0 - margin) - elapsed_s
    return max(step + 1, min(max_steps, step + int(left // step_s)))


@dataclass
class StepBudget:
    """Fits a loop's step count to ``minutes`` of wall clock (0 = no budget: ``fitted`` returns None forever).

    Steps ``skip`` .. ``skip + window`` of this invocation are timed (the first ones include compilation and
    warm-up); after the window the count is fitted once from their median (kept in ``step_s``). ``done=True`` skips
    the fit (a resumed run keeps its count); ``over(elapsed)`` is the hard stop either way.
    """

    minutes: float
    skip: int = 5
    window: int = 20
    overrun: float = 1.10
    times: list[float] = field(default_factory=list)
    seen: int = 0
    done: bool = False
    step_s: float = 0.0

    @property
    def budget_s(self) -> float:
        return self.minutes * 60.0

    def record(self, step_s: float) -> None:
        """Time of one step of this invocation."""
        self.seen += 1
        if self.seen > self.skip and len(self.times) < self.window:
            self.times.append(step_s)

    def fitted(self, step: int, elapsed_s: float, max_steps: int) -> int | None:
        """The new step count once the timing window is full (once per invocation), else None."""
        if self.minutes <= 0 or self.done or len(self.times) < self.window:
            return None
        self.done = True
        self.step_s = statistics.median(self.times)
        return fit_steps(step, elapsed_s, self.step_s, self.budget_s, max_steps)

    def over(self, elapsed_s: float) -> bool:
        """True when the loop has run past ``overrun`` × the budget and should stop now."""
        return self.minutes > 0 and elapsed_s > self.overrun * self.budget_s
