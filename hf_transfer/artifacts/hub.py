"""Push a finished run to the Hugging Face Hub: create_repo + upload_folder.

Only what the standard loaders open and the card with what it shows are uploaded: the model files the
run lists in run_info.json, the card, its pictures and metrics.json, less what never belongs on the Hub
even inside those (temporary and hidden files, pickles). A run folder is data (it may have been copied
or tampered with): only regular files that lie inside it are uploaded, never a symbolic link or what it
points at, and upload_folder is given their exact paths as its allow_patterns. So checkpoints, tracker
logs, evaluation dumps, the run's local bookkeeping (config.yaml / run_info.json hold local paths; the
card carries a cleaned copy of the config) and anything else in the folder stay here.
The token is never handled here: huggingface_hub finds it (HF_TOKEN, the login cache).
"""

from __future__ import annotations

import glob
import logging
import os
from pathlib import Path

from ..core.errors import HubError
from ..core.rundir import RunDir

logger = logging.getLogger(__name__)

DEFAULT_COMMIT_MESSAGE = "Upload model trained with hf-transfer"
_PUBLISHED = [RunDir.CARD, RunDir.CURVES, RunDir.CONFUSION, RunDir.METRICS]
# fnmatch patterns on paths relative to output_dir, where `*` also matches `/`: hidden files, what RunDir calls
# unfinished (temporaries, locks), and pickled weights (the loaders read safetensors).
IGNORE_PATTERNS = [".*", "*/.*", *RunDir.UNFINISHED, *(f"*.{suffix}" for suffix in ("bin", "pt", "pth", "pkl", "ckpt"))]


def push_patterns(run_dir: RunDir) -> tuple[list[str], list[str]]:
    """upload_folder's allow_patterns and ignore_patterns for the run in run_dir."""
    # Escaped: run_info.json is data, and a listed name must match only itself.
    model = [glob.escape(name) for name in run_dir.model_files()]
    return [*_PUBLISHED, *model, *(f"{name}/*" for name in model)], IGNORE_PATTERNS


def files_to_push(run_dir: RunDir) -> list[str]:
    """Relative paths (posix) of the files a push uploads from the run's folder: huggingface_hub's own filter
    (the one upload_folder applies) over the folder's regular files; a symbolic link that the patterns
    would take is left out, with a warning."""
    from huggingface_hub.utils import filter_repo_objects

    output_dir = run_dir.root
    allow, ignore = push_patterns(run_dir)
    regular, links = _walk(output_dir)
    skipped = list(filter_repo_objects(links, allow_patterns=allow, ignore_patterns=ignore))
    if skipped:
        logger.warning(
            f"Not uploading {', '.join(skipped)} from {output_dir}: a symbolic link (or inside one), and a push "
            "uploads only regular files inside the run folder. Replace it with the file itself to upload it."
        )
    return list(filter_repo_objects(regular, allow_patterns=allow, ignore_patterns=ignore))


def _walk(root: Path) -> tuple[list[str], list[str]]:
    """The regular files under `root` that resolve inside it, and the symbolic links (to files or folders,
    never followed), as sorted relative posix paths."""
    inside = root.resolve()
    regular, links = [], []
    for folder, names, files in os.walk(root, followlinks=False):
        for name in [*names, *files]:
            path = Path(folder, name)
            relative = path.relative_to(root).as_posix()
            if path.is_symlink():
                links.append(relative)
            elif name in files and path.is_file() and path.resolve().is_relative_to(inside):
                regular.append(relative)
    return sorted(regular), sorted(links)


def require_token() -> None:
    """Fail before any work when no token can be found (training hours would otherwise end in an error)."""
    from huggingface_hub import get_token

    if get_token() is None:
        raise HubError(
            "No Hugging Face token found. Set HF_TOKEN or run `hf auth login` (a token with write access), "
            "or set push_to_hub=false."
        )


def push_run(
    run: RunDir | str | Path,
    repo_id: str,
    private: bool = False,
    revision: str | None = None,
    commit_message: str = DEFAULT_COMMIT_MESSAGE,
) -> str:
    """Upload a run's loadable files to `repo_id` (created if missing); returns the commit URL. `run`: the
    run's RunDir (a training run passes its own down), or the folder of a finished run (`hf-transfer push`)."""
    from huggingface_hub import HfApi

    run_dir = RunDir.of(run)
    output_dir = run_dir.root
    files = files_to_push(run_dir)
    if not any(f.endswith(".safetensors") for f in files):
        raise HubError(f"{output_dir} holds no model weights (*.safetensors): is it the output_dir of a finished run?")
    require_token()
    api = HfApi()
    retry = f"The run is saved in {output_dir}; retry with `hf-transfer push {output_dir} --repo-id {repo_id}`."
    try:
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        if revision:
            api.create_branch(repo_id, branch=revision, exist_ok=True, repo_type="model")
        commit = api.upload_folder(
            repo_id=repo_id,
            folder_path=str(output_dir),
            allow_patterns=[glob.escape(name) for name in files],  # these files exactly: no link, nothing else
            ignore_patterns=IGNORE_PATTERNS,
            repo_type="model",
            revision=revision,
            commit_message=commit_message,
        )
    except Exception as err:  # noqa: BLE001 - HTTP/network/offline errors come in many types; the user needs one line
        raise HubError(f"Push to {repo_id} failed: {_reason(err)}. {retry}") from None
    url = str(getattr(commit, "commit_url", None) or f"https://huggingface.co/{repo_id}")
    logger.info(f"Pushed {len(files)} files to {url}")
    return url


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
