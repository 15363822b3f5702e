"""The public learner API: `Learner` (api.learner), `TaskModule` (api.module, the default
LightningModule), and the plain types `LearnerConfig`, `LearnerContext`, `TaskInfo` (api.types,
no torch import)."""

__all__: list[str] = []
