"""Analysis of finished runs: stream scores and the compute-performance plots."""

__all__: list[str] = []
