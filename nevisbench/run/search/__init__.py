"""The search over one task's settings: its Optuna study and records, the trials run in turn or in a
parallel pool. Imports `run.task`, `run.learner` and `run.store`; only the stream level imports it."""
