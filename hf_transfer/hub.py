"""Push a finished run to the Hugging Face Hub: create_repo + upload_folder.

Only what the standard loaders open (and the card with its pictures) is uploaded: no checkpoints,
tracker logs, evaluation dumps, temporary files, pickles, or the run's local bookkeeping
(config.yaml / run_info.json hold local paths; the card carries a cleaned copy of the config).
The token is never handled here: huggingface_hub finds it (HF_TOKEN, the login cache).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

from .errors import HubError

logger = logging.getLogger(__name__)

DEFAULT_COMMIT_MESSAGE = "Upload model trained with hf-transfer"
_SKIPPED_DIRS = {"checkpoints", "logs", "eval"}
_SKIPPED_FILES = {"config.yaml", "run_info.json"}
_SKIPPED_SUFFIXES = {".tmp", ".bin", ".pt", ".pth", ".pkl", ".ckpt", ".lock"}


def files_to_push(output_dir: Path) -> list[str]:
    """Relative paths (posix) of the files a push uploads from output_dir."""
    chosen = []
    for path in sorted(output_dir.rglob("*")):
        relative = path.relative_to(output_dir)
        parts = relative.parts
        if not path.is_file() or parts[0] in _SKIPPED_DIRS or any(p.startswith(".") for p in parts):
            continue
        if (len(parts) == 1 and parts[0] in _SKIPPED_FILES) or path.suffix in _SKIPPED_SUFFIXES:
            continue
        chosen.append(relative.as_posix())
    return chosen


def require_token() -> None:
    """Fail before any work when no token can be found (training hours would otherwise end in an error)."""
    from huggingface_hub import get_token

    if get_token() is None:
        raise HubError(
            "No Hugging Face token found. Set HF_TOKEN or run `hf auth login` (a token with write access), "
            "or set push_to_hub=false."
        )


def push_run(
    output_dir: str | Path,
    repo_id: str,
    private: bool = False,
    revision: str | None = None,
    commit_message: str = DEFAULT_COMMIT_MESSAGE,
) -> str:
    """Upload a run's loadable files to `repo_id` (created if missing); returns the commit URL."""
    from huggingface_hub import HfApi

    output_dir = Path(output_dir)
    files = files_to_push(output_dir)
    if not any(f.endswith(".safetensors") for f in files):
        raise HubError(f"{output_dir} holds no model weights (*.safetensors): is it the output_dir of a finished run?")
    require_token()
    api = HfApi()
    retry = f"The run is saved in {output_dir}; retry with `hf-transfer push {output_dir} --repo-id {repo_id}`."
    try:
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        if revision:
            api.create_branch(repo_id, branch=revision, exist_ok=True, repo_type="model")
        with tempfile.TemporaryDirectory(prefix="hf-transfer-push-") as tmp:
            staging = _stage(output_dir, files, Path(tmp))
            commit = api.upload_folder(
                repo_id=repo_id,
                folder_path=str(staging),
                repo_type="model",
                revision=revision,
                commit_message=commit_message,
            )
    except Exception as err:  # noqa: BLE001 - HTTP/network/offline errors come in many types; the user needs one line
        raise HubError(f"Push to {repo_id} failed: {_reason(err)}. {retry}") from None
    url = str(getattr(commit, "commit_url", None) or f"https://huggingface.co/{repo_id}")
    logger.info(f"Pushed {len(files)} files to {url}")
    return url


def _stage(output_dir: Path, files: list[str], staging: Path) -> Path:
    """The selected files under a temporary folder (hard links: no copy of large weights where possible)."""
    for relative in files:
        target = staging / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(output_dir / relative, target)
        except OSError:
            shutil.copy2(output_dir / relative, target)
    return staging


def _reason(err: Exception) -> str:
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    if isinstance(err, OfflineModeIsEnabled):
        return "HF_HUB_OFFLINE is set (no network access allowed); unset it when online"
    if isinstance(err, HfHubHTTPError):
        status = getattr(getattr(err, "response", None), "status_code", None)
        if status in (401, 403):
            return f"the Hub refused the token (HTTP {status}); use a token with write access to this repository"
    first_line = str(err).strip().splitlines()[0] if str(err).strip() else ""
    return f"{type(err).__name__}: {first_line}" if first_line else type(err).__name__
