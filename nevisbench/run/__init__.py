"""Running a stream: the runner, its Lightning callbacks, evaluation, the results store, loggers,
terminal reports and backbone construction."""

__all__: list[str] = []
