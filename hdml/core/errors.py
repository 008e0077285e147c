"""The suite's errors, each mapped to an exit code by the command line. Their own module, importing
nothing, so that `hdml --help` and the commands that train nothing start without torch."""
from __future__ import annotations


class ConfigError(ValueError):
    """A bad key or value in a run config or a workflow config."""


class TrainingDiverged(RuntimeError):
    """The loss stayed NaN or infinite for too many consecutive steps."""


class Interrupted(RuntimeError):
    """A termination signal arrived; a checkpoint was written, a rerun resumes."""
