"""A run's folder (output_dir): the one place that names its files, and the lock that makes one run its owner.

    output_dir/
      config.yaml  run_info.json  metrics.json  README.md  training_curves.png  confusion_matrix.png
      <model files>               the standard format of the model's library (listed in run_info.json)
      merged/                     LoRA runs with export.merge
      checkpoints/step_*/         resumable states (written as step_*.tmp/, renamed once complete);
                                  checkpoints/best/model.safetensors, the run's best weights
      eval/<name>.json            classification reports
      logs/hf_transfer/           tracker logs (tensorboard)
      .hf_transfer.lock           held while a run writes here; it also marks the folder as a run's
      .hf_transfer.previous/      the run being replaced (overwrite), until the new one has something

A folder holds at most one run, and a run writes only into a folder that is new, empty or a run's
(hf-transfer's): a folder of other files (a model downloaded from the Hub, a project) is refused, since
a run would write over files of the same names (README.md, config.yaml). Starting a run where another
one's files are is refused (resume it, use another folder, or overwrite it); a second run started while
one is writing finds the lock taken.

Overwriting removes only what a run wrote (the files above; in checkpoints/, eval/ and logs/ only the
run's own entries), and only once the new run has something to put there: the old run is moved aside
when the folder is claimed, and deleted when the new run ends or has written a checkpoint; a run that
fails before that puts it back (a later claim does so after a kill). A run that fails leaving nothing
also removes the folders it created.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from .errors import ConfigError


class RunDir:
    CONFIG = "config.yaml"
    RUN_INFO = "run_info.json"
    METRICS = "metrics.json"
    CARD = "README.md"
    CURVES = "training_curves.png"
    CONFUSION = "confusion_matrix.png"
    CHECKPOINTS = "checkpoints"
    BEST = "best/model.safetensors"
    CHECKPOINT = "step_{step:07d}"  # numbered by the run-wide optimizer step: names sort as the steps do
    CHECKPOINT_BEST = "best.safetensors"  # in a checkpoint: the run's best weights as of it
    CHECKPOINT_STATE = "trainer_state.json"  # in a checkpoint: where training stands
    # In a checkpoint, one per process: where its training loader stands (data/loaders.py: JSON, both kinds of data).
    CHECKPOINT_LOADER = "loader_state_{rank}.json"
    MODEL_STAGING = ".model-"  # the prefix of the folder the model's files are written into before the move
    LOGS = "logs"
    EVAL = "eval"
    MERGED = "merged"
    LOCK = ".hf_transfer.lock"
    PREVIOUS = ".hf_transfer.previous"
    TRACKER_PROJECT = "hf_transfer"  # the trackers' project name: tensorboard writes logs/hf_transfer/
    # What a run writes at the top of its folder besides its model files (which run_info.json lists).
    RUN_FILES = (CONFIG, RUN_INFO, METRICS, CARD, CURVES, CONFUSION, MERGED)
    # Folders a user may also put files into: only these entries in them are a run's.
    RUN_ENTRIES = {CHECKPOINTS: ("step_*", "best"), EVAL: ("*.json",), LOGS: (TRACKER_PROJECT,)}
    # What an interrupted write leaves (core.atomic.atomic_path, save_model_artifact's staging folder).
    TEMPORARY = (".*.tmp", MODEL_STAGING + "*")
    # Anywhere in the folder (fnmatch patterns, `*` matching `/` too): what a write under way leaves (a
    # checkpoint's step_N.tmp/ and what is in it, core.atomic's .NAME.PID.tmp) and a lock file (the run's,
    # filelock's): never part of a run's result.
    UNFINISHED = ("*.tmp", "*.tmp/*", "*.lock")

    @classmethod
    def of(cls, where: RunDir | str | Path) -> RunDir:
        """`where` itself when it is a RunDir (the run's one instance, passed down), else a RunDir on that path."""
        return where if isinstance(where, RunDir) else cls(where)

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self._lock: FileLock | None = None
        self._created: list[Path] = []  # the folders this claim created (root last), removed if the run leaves nothing

    # ---- paths -----------------------------------------------------------------------------------
    @property
    def config(self) -> Path:
        return self.root / self.CONFIG

    @property
    def run_info(self) -> Path:
        return self.root / self.RUN_INFO

    @property
    def metrics(self) -> Path:
        return self.root / self.METRICS

    @property
    def merged(self) -> Path:
        return self.root / self.MERGED

    @property
    def checkpoints(self) -> Path:
        return self.root / self.CHECKPOINTS

    @property
    def best_weights(self) -> Path:
        return self.checkpoints / self.BEST

    @property
    def logs(self) -> Path:
        return self.root / self.LOGS

    @property
    def card(self) -> Path:
        return self.root / self.CARD

    @property
    def curves(self) -> Path:
        return self.root / self.CURVES

    @property
    def confusion(self) -> Path:
        return self.root / self.CONFUSION

    def eval_report(self, name: str) -> Path:
        """eval/NAME.json; NAME comes from the user (`evaluate --name`), so it must name a file in eval/."""
        if not _plain_name(name):
            raise ConfigError(
                f"Report name {name!r} is not a plain file name: give a name without '/', '\\' or '..' (the report "
                f"is written to {self.root / self.EVAL}/NAME.json)."
            )
        return self.root / self.EVAL / f"{name}.json"

    def checkpoint_path(self, step: int) -> Path:
        """The checkpoint folder of run-wide optimizer step `step`."""
        return self.checkpoints / self.CHECKPOINT.format(step=step)

    @classmethod
    def loader_state(cls, checkpoint: Path, rank: int) -> Path:
        """The file in `checkpoint` that holds process `rank`'s training-loader position."""
        return checkpoint / cls.CHECKPOINT_LOADER.format(rank=rank)

    def checkpoint_dirs(self) -> list[Path]:
        """Complete resumable checkpoints, oldest first (a `.tmp` folder is an interrupted write)."""
        return sorted(self.checkpoints.glob("step_*[0-9]"))

    @contextmanager
    def write_checkpoint(self, step: int, commit: bool = True) -> Iterator[Path]:
        """The temporary folder (checkpoints/step_N.tmp) to write step `step`'s checkpoint into; when the block
        ends without an error and `commit` (the main process: every process writes its part into the same
        folder, one renames it), it replaces checkpoint_path(step) at once, so a checkpoint folder exists only
        once complete. An error or a kill leaves the `.tmp` folder, which is never listed or resumed."""
        final = self.checkpoint_path(step)
        tmp = final.with_name(f"{final.name}.tmp")
        yield tmp
        if commit:
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)

    def prune_checkpoints(self, limit: int, ours: Callable[[Path], bool]) -> None:
        """Keep the newest `limit` checkpoints of those `ours` accepts (this run's); the others stay untouched."""
        for old in [path for path in self.checkpoint_dirs() if ours(path)][:-limit]:
            shutil.rmtree(old)

    @contextmanager
    def stage_model(self) -> Iterator[Path]:
        """A staging folder in this folder for the model's files; when the block ends without an error, each
        entry written there replaces the one of the same name here (renames: a crash never leaves half a model
        file beside a good one). The staging folder is removed either way."""
        self.root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=self.root, prefix=self.MODEL_STAGING) as tmp:
            staging = Path(tmp)
            yield staging
            for item in staging.iterdir():
                target = self.root / item.name
                if target.is_dir() and item.is_dir():
                    shutil.rmtree(target)
                os.replace(item, target)

    def latest_checkpoint(self) -> Path | None:
        found = self.checkpoint_dirs()
        return found[-1] if found else None

    # ---- what is here ------------------------------------------------------------------------------
    def is_finished_run(self) -> bool:
        return self.run_info.is_file()

    def read_run_info(self) -> dict[str, Any]:
        return json.loads(self.run_info.read_text())

    def model_files(self) -> list[str]:
        """The names of the model files a finished run lists in run_info.json (top-level entries, folders
        such as merged/ included). Only plain names of this folder's own entries: run_info.json is data,
        never a way out of the folder."""
        return _model_files(self.root)

    def holds_run(self) -> bool:
        """Whether another run's files are here: a finished run, or checkpoints of an unfinished one."""
        return self.is_finished_run() or self.metrics.is_file() or bool(self.checkpoint_dirs())

    # ---- ownership ---------------------------------------------------------------------------------
    def is_runs_folder(self) -> bool:
        """Whether a run claimed this folder (its lock file is here) or a run's files are (a run folder
        copied without its hidden files)."""
        return (self.root / self.LOCK).exists() or (self.root / self.PREVIOUS).exists() or self.holds_run()

    def foreign_files(self) -> list[str]:
        """The names in a folder that is not a run's (empty when it is new, empty or a run's)."""
        if not self.root.is_dir() or self.is_runs_folder():
            return []
        return sorted(entry.name for entry in self.root.iterdir())

    def has_results(self) -> bool:
        """Whether the run here has something worth keeping: it finished, or left a checkpoint or best weights."""
        return self.holds_run() or self.best_weights.is_file()

    def claim(self, resume: bool, overwrite: bool) -> str | None:
        """Take the folder for a new run (or for resuming the run that is here). Returns why not, or None
        and keeps the lock until `release`. With `overwrite`, the run that is here is moved aside, to be
        deleted or put back by `release`."""
        problem = self._refusal(self.foreign_files())  # before anything is created in someone else's folder
        if problem:
            return problem
        lock = None
        for _ in range(3):  # a failed run may remove a new folder and its lock file: take the new one then
            self._make_folder()
            lock = FileLock(str(self.root / self.LOCK))
            try:
                lock.acquire(timeout=0)
            except Timeout:
                return (
                    f"Another run is writing to {self.root} right now (its lock {self.LOCK} is held). "
                    "Give this run another output_dir, or wait for that one to finish."
                )
            if (self.root / self.LOCK).exists():
                break
            lock.release()
        self._lock = lock
        problem = self._refusal(self._foreign_besides_lock())  # what came in meanwhile
        if problem:
            self._leave(remove_lock=True)
            return problem
        self._recover()
        if self.holds_run() and not resume:
            if not overwrite:
                self._leave(remove_lock=False)
                what = "a finished run" if self.is_finished_run() else "checkpoints of an unfinished run"
                return (
                    f"{self.root} already holds {what}. Use another output_dir, pass --overwrite (overwrite=true) "
                    "to replace it, or set train.resume_from_checkpoint=latest to continue it."
                )
            self._move(self.root, self.root / self.PREVIOUS)
        return None

    def _refusal(self, foreign: list[str]) -> str | None:
        if self.root.exists() and not self.root.is_dir():
            return f"output_dir {self.root} is a file, not a folder: give a new or empty folder as output_dir."
        if not foreign:
            return None
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        return (
            f"{self.root} is not empty and holds no hf-transfer run ({shown}): a run writes files such as "
            "README.md and config.yaml and would replace yours, so it writes only into a new or empty folder "
            "or one of its own runs (--overwrite replaces only such a run). Give another output_dir."
        )

    def _foreign_besides_lock(self) -> list[str]:
        """As foreign_files, in a folder whose lock this claim may just have created."""
        if self.holds_run() or (self.root / self.PREVIOUS).exists():
            return []
        return sorted(entry.name for entry in self.root.iterdir() if entry.name != self.LOCK)

    def _make_folder(self) -> None:
        missing = [folder for folder in [self.root, *self.root.parents] if not folder.exists()]
        self.root.mkdir(parents=True, exist_ok=True)
        self._created = self._created or missing

    def _recover(self) -> None:
        """After a replacing run was killed: its predecessor comes back if it left nothing, else goes."""
        previous = self.root / self.PREVIOUS
        if not previous.is_dir():
            return
        if self.has_results():
            shutil.rmtree(previous)
        else:
            self._remove(self.run_entries(self.root))
            self._move(previous, self.root)
            shutil.rmtree(previous)

    def release(self, succeeded: bool) -> None:
        """Give the folder up at the end of a run. After a run that failed without results (`has_results`),
        what it wrote is removed, the run it was replacing is put back, and the folders its claim created go
        if nothing else is in them; otherwise the replaced run is deleted."""
        if self._lock is None:
            return
        previous = self.root / self.PREVIOUS
        if succeeded or self.has_results():
            if previous.is_dir():
                shutil.rmtree(previous)
        else:
            self._remove(self.run_entries(self.root))
            if previous.is_dir():
                self._move(previous, self.root)
                shutil.rmtree(previous)
        self._leave(remove_lock=not succeeded and not self.holds_run())

    def _leave(self, remove_lock: bool) -> None:
        """Release the lock; with `remove_lock`, a folder left holding nothing but it loses the lock file, and
        goes if this claim created it (a run waiting on the removed lock file takes a new one: see claim)."""
        assert self._lock is not None
        if remove_lock and all(entry.name == self.LOCK for entry in self.root.iterdir()):
            (self.root / self.LOCK).unlink(missing_ok=True)
            for folder in self._created:  # the deepest first
                if folder.is_dir() and not any(folder.iterdir()):
                    folder.rmdir()
        self._lock.release()
        self._lock = None
        self._created = []

    def run_entries(self, root: Path) -> list[Path]:
        """What a run wrote under `root` (this folder, or the replaced run's place aside): the run's files,
        the model files its run_info.json lists, its entries in checkpoints/, eval/ and logs/, and what an
        interrupted write left."""
        kept = {self.LOCK, self.PREVIOUS, *self.RUN_ENTRIES}  # never a model file, whatever run_info.json says
        listed = [name for name in _model_files(root) if name not in kept]
        paths = [root / name for name in [*self.RUN_FILES, *listed]]
        paths += [path for sub, patterns in self.RUN_ENTRIES.items() for p in patterns for path in (root / sub).glob(p)]
        paths += [path for pattern in self.TEMPORARY for path in root.glob(pattern)]
        return sorted({path for path in paths if path.exists() or path.is_symlink()})

    def _remove(self, paths: list[Path]) -> None:
        for path in paths:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
        self._prune()

    def _move(self, source: Path, target: Path) -> None:
        """Move the run's entries under `source` to the same places under `target` (renames: same filesystem)."""
        for path in self.run_entries(source):
            destination = target / path.relative_to(source)
            destination.parent.mkdir(parents=True, exist_ok=True)
            path.rename(destination)
        for folder in (source, target):
            self._prune(folder)

    def _prune(self, root: Path | None = None) -> None:
        """Remove checkpoints/, eval/ and logs/ where a removal or a move left them empty (under `root`: this
        folder, or the replaced run's place aside)."""
        for sub in self.RUN_ENTRIES:
            path = (root or self.root) / sub
            if path.is_dir() and not path.is_symlink() and not any(path.iterdir()):
                path.rmdir()


def _model_files(root: Path) -> list[str]:
    """RunDir.model_files of the run folder (or the replaced run's place aside) at `root`."""
    info = root / RunDir.RUN_INFO
    listed = json.loads(info.read_text()).get("artifacts", []) if info.is_file() else []
    return [name for name in listed if isinstance(name, str) and _plain_name(name)]


def _plain_name(name: str) -> bool:
    return name not in ("", ".", "..") and "/" not in name and "\\" not in name
