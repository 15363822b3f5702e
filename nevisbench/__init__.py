"""nevisbench: a compute-aware benchmark harness for continual and transfer learning.

The public API for learner authors: `Learner`, `LearnerConfig`, `LearnerContext`, `TaskInfo`,
`TaskModule`, and the errors they may raise. Names load lazily, so `import nevisbench` and config
validation stay fast (torch and Lightning load when a run starts).
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "ConfigError": "nevisbench.errors",
    "DataError": "nevisbench.errors",
    "NevisbenchError": "nevisbench.errors",
    "PluginError": "nevisbench.errors",
    "Learner": "nevisbench.api.learner",
    "LearnerConfig": "nevisbench.api.types",
    "LearnerContext": "nevisbench.api.types",
    "TaskInfo": "nevisbench.api.types",
    "TaskModule": "nevisbench.api.module",
}
__all__ = [*_EXPORTS, "__version__"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'nevisbench' has no attribute {name!r}")
