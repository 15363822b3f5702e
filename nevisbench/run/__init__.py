"""Running a stream: the runner, its Lightning callbacks, evaluation, the results store, loggers,
terminal reports, backbone construction, and the per-image FLOP probe behind `nevisbench flops`."""

__all__: list[str] = []
