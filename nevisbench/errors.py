"""User-facing errors: each is one line naming the bad value and the valid choices."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = ["NevisbenchError", "ConfigError", "DataError", "PluginError", "RunInterrupted", "RunFailed", "TaskFailed",
           "WriteFailed", "choice_error"]


class NevisbenchError(Exception):
    """An error caused by the user's input or environment; the CLI prints it without a traceback."""

    exit_code = 2


class ConfigError(NevisbenchError):
    """A bad configuration value, key or option."""


class DataError(NevisbenchError):
    """Task data that is missing, corrupt or inconsistent."""


class PluginError(NevisbenchError):
    """A learner plugin that does not honour the learner API."""


class RunInterrupted(NevisbenchError):
    """Ctrl-C: what was in flight is written; the message says how to resume."""

    exit_code = 130

    def __init__(self, run_dir: object, finished: int) -> None:
        super().__init__(f"interrupted; {finished} finished task(s) are kept in {run_dir}. "
                         f"Resume with: nevisbench run resume={run_dir}")


class RunFailed(NevisbenchError):
    """A task failed and `on_failure=stop` ended the stream."""

    exit_code = 1


class WriteFailed(NevisbenchError, OSError):
    """The harness could not write one of its own files (a full disk, a vanished folder): never the
    learner's failure. Its temporary file is removed; what was committed before stays. Still an
    OSError, for callers that catch those."""

    exit_code = 1


class TaskFailed(Exception):
    """A task cannot go on (e.g. a NaN loss); the runner records it and applies `on_failure`."""


def did_you_mean(value: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(str(value), list(choices), n=1, cutoff=0.6)
    return f" Did you mean '{close[0]}'?" if close else ""


def choice_error(what: str, value: object, choices: Iterable[str], *, fix: str = "") -> ConfigError:
    """`Unknown learner 'conv_prun'. Valid: a, b, c. Did you mean 'conv_prune'?`"""
    choices = sorted(choices)
    message = f"Unknown {what} '{value}'. Valid: {', '.join(choices)}.{did_you_mean(str(value), choices)}"
    return ConfigError(message + (f" {fix}" if fix else ""))
