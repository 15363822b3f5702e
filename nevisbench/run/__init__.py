"""Running a stream. The stream level (the runner, revisits, the per-image FLOP probe behind
`nevisbench flops`) sits here; below it, in import order, are four rooms: `search/` (a task's
trials), `task/` (one task's Lightning training), `learner/` (the harness's side of a learner) and
`store/` (the run folder's files and where results are shown: the only room `analysis/` and
`sweep/` may import)."""

__all__: list[str] = []
