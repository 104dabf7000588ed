"""Errors a user can act on. The CLI prints these as one message, without a traceback."""


class HFTransferError(Exception):
    """Base class: the message names the problem and the fix."""


class ConfigError(HFTransferError, ValueError):
    """A config key or value is wrong."""


class DataError(HFTransferError, ValueError):
    """The data cannot be read or does not fit the task."""


class ModelError(HFTransferError, ValueError):
    """The model spec cannot be resolved or does not fit the strategy."""


class HubError(HFTransferError, RuntimeError):
    """Pushing to the Hugging Face Hub failed (no token, no network, no access)."""


class TrainingDiverged(HFTransferError, RuntimeError):
    """The training loss became NaN or infinite; the run stopped, earlier checkpoints are kept."""
