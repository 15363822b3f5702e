"""The harness's side of a learner: plugin hooks called under one wrapper, the examples it may draw
(`context.data`), the scenario's starting backbones, and the backbone it starts from. Imports only
`run.store` of `run/`; the task, search and stream rooms import it."""
