"""How long training will take, measured on the run's own first steps (nothing extra is run).

The first step pays one-off costs (memory allocation, kernel selection), so the clock starts when
it ends; after ``steps`` more real optimiser steps the mean time per step gives the estimate.
No extra forward pass, batch-norm update or random draw is made: the estimate cannot change training.
"""

from __future__ import annotations

import time


class StepTimer:
    """Call :meth:`tick` after every step; it returns the estimate once, after ``1 + steps`` steps."""

    def __init__(self, steps: int = 5):
        self.steps, self.start, self.first, self.done = steps, None, None, False

    def tick(self, step: int, total: int) -> dict | None:
        now = time.perf_counter()
        if self.done:
            return None
        if self.start is None:
            self.start, self.first = now, step
            return None
        measured = step - self.first
        if measured < self.steps and step < total:
            return None
        self.done = True
        per_step = (now - self.start) / max(measured, 1)
        left = max(total - step, 0)
        return {"seconds_per_step": per_step, "measured_steps": measured, "from_step": self.first + 1,
                "total_steps": total, "steps_left": left, "seconds_left": per_step * left}
