"""nevisbench: a compute-aware benchmark harness for continual and transfer learning.

The public API for learner authors: `Learner`, `LearnerConfig`, `LearnerContext`, `TaskInfo`,
`TaskModule`, and the errors they may raise.
"""

from nevisbench.errors import ConfigError, DataError, NevisbenchError, PluginError
from nevisbench.learner import Learner, LearnerConfig, LearnerContext, TaskInfo, TaskModule

__version__ = "0.1.0"
__all__ = [
    "ConfigError", "DataError", "NevisbenchError", "PluginError",
    "Learner", "LearnerConfig", "LearnerContext", "TaskInfo", "TaskModule", "__version__",
]
