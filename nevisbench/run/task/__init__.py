"""One task's Lightning training: the Trainer, its callbacks (the meter's among them), the task plan
(steps, milestones, budget), evaluation, best-dev selection, compilation, DDP. Imports `run.store`
and `run.learner`; the search and the stream level import it."""
