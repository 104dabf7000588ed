"""A run's folder (output_dir): the one place that names its files, and the lock that makes one run its owner.

    output_dir/
      config.yaml  run_info.json  metrics.json  README.md  training_curves.png  confusion_matrix.png
      <model files>               the standard format of the model's library (listed in run_info.json)
      merged/                     LoRA runs with export.merge
      checkpoints/step_*/         resumable states;  checkpoints/best/model.safetensors
      eval/<name>.json            classification reports
      logs/                       tracker logs
      .hf_transfer.lock           held while a run writes here

A folder holds at most one run. Starting a run where another one's files are is refused (resume it,
use another folder, or overwrite it, which removes the old run's files first); a second run started
while one is writing finds the lock taken.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from filelock import FileLock, Timeout

from .errors import ConfigError

if TYPE_CHECKING:
    from .config import RunConfig


class RunDir:
    CONFIG = "config.yaml"
    RUN_INFO = "run_info.json"
    METRICS = "metrics.json"
    CARD = "README.md"
    CURVES = "training_curves.png"
    CONFUSION = "confusion_matrix.png"
    CHECKPOINTS = "checkpoints"
    BEST = "best/model.safetensors"
    LOGS = "logs"
    EVAL = "eval"
    MERGED = "merged"
    LOCK = ".hf_transfer.lock"
    # What a run writes besides its model files (which run_info.json lists).
    RUN_FILES = (CONFIG, RUN_INFO, METRICS, CARD, CURVES, CONFUSION, CHECKPOINTS, LOGS, EVAL, MERGED)

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self._lock: FileLock | None = None

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

    def checkpoint_dirs(self) -> list[Path]:
        """Complete resumable checkpoints, oldest first (a `.tmp` folder is an interrupted write)."""
        return sorted(self.checkpoints.glob("step_*[0-9]"))

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
        listed = self.read_run_info().get("artifacts", []) if self.is_finished_run() else []
        return [name for name in listed if isinstance(name, str) and _plain_name(name)]

    def read_config(self) -> RunConfig:
        from .config import load_config

        return load_config(self.config)

    def holds_run(self) -> bool:
        """Whether another run's files are here: a finished run, or checkpoints of an unfinished one."""
        return self.is_finished_run() or self.metrics.is_file() or bool(self.checkpoint_dirs())

    # ---- ownership ---------------------------------------------------------------------------------
    def claim(self, resume: bool, overwrite: bool) -> str | None:
        """Take the folder for a new run (or for resuming the run that is here). Returns why not, or None
        and keeps the lock until `release`."""
        self.root.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(self.root / self.LOCK))
        try:
            lock.acquire(timeout=0)
        except Timeout:
            return (
                f"Another run is writing to {self.root} right now (its lock {self.LOCK} is held). "
                "Give this run another output_dir, or wait for that one to finish."
            )
        if self.holds_run() and not resume:
            if not overwrite:
                lock.release()
                what = "a finished run" if self.is_finished_run() else "checkpoints of an unfinished run"
                return (
                    f"{self.root} already holds {what}. Use another output_dir, pass --overwrite (overwrite=true) "
                    "to replace it, or set train.resume_from_checkpoint=latest to continue it."
                )
            self.clear()
        self._lock = lock
        return None

    def release(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def clear(self) -> None:
        """Remove the run that is here: its standard files and the model files its run_info.json lists;
        anything else in the folder is left alone."""
        for name in [*self.RUN_FILES, *self.model_files()]:
            path = self.root / name
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()


def _plain_name(name: str) -> bool:
    return name not in ("", ".", "..") and "/" not in name and "\\" not in name
