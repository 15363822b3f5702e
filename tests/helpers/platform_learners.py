"""Learners that use the platform's data access (context.data), for tests."""

from __future__ import annotations

from typing import Any

import torch

from nevisbench.api.learner import Learner
from nevisbench.errors import PluginError


class ReplayProbe(Learner):
    """Draws 4 training examples of every task it may see at the end of each task, and checks that
    the next task is refused; reports what it saw."""

    def end_task(self, task: Any, module: Any) -> None:
        data = self.context.data
        self.seen = [t.key for t in data.tasks()]
        self.drawn = {t.key: int(data.train_batch(t, 4, generator=torch.Generator().manual_seed(0))[0].shape[0])
                      for t in data.tasks()}
        try:
            data.train_batch(task.index + 1, 1)
            self.refused = False
        except PluginError:
            self.refused = True

    def task_report(self, task: Any) -> dict[str, Any]:
        return {"tasks_seen": self.seen, "drawn": self.drawn, "refused_future": self.refused}
