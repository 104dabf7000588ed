"""`hf-transfer compare`: several strategies on one task and model, same seed and data, one table.

Each strategy is a normal run in `<output_dir>/<strategy>/` (artifacts, card, evaluate and push work as
for any run). What the runs share is done once: the data is loaded and the model built once (each run
trains a copy), decoded inputs and backbone features come from the cache (linear_probe and LP-FT's probe
stage share features). The table (Markdown, JSON, bar chart) goes to `<output_dir>/comparison.*`.

A strategy that fails ends the comparison: the table is written for what this comparison ran (the
strategies done, the one that failed with its error, those not run), never left listing an earlier
comparison's results, and the error is raised. The failed strategy's folder keeps its earlier run
unless the failed run got as far as a checkpoint (see RunDir: a run replaces another only then).
"""

from __future__ import annotations

import copy
import json
import logging
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import psutil
import torch

from .artifacts.plots import plot_comparison
from .config.schema import RunConfig
from .core.atomic import json_safe, write_json, write_text_atomic
from .core.errors import HFTransferError
from .core.log import default_logging
from .data.defaults import with_output_dir
from .data.files import one_listing_per_folder
from .data.sources import check_output_outside_data
from .engine.distributed import process_state
from .methods.strategies import COMPARED_BY_DEFAULT, STRATEGIES
from .train import prepare, train

logger = logging.getLogger(__name__)


@dataclass
class Row:
    strategy: str
    accuracy: float
    f1_macro: float
    trainable_parameters: int
    wall_seconds: float
    train_samples_per_second: float
    peak_memory_mb: float  # device memory on an accelerator; growth of the process's RSS on CPU
    output_dir: str


@dataclass
class Comparison:
    rows: list[Row]
    memory: str  # what peak_memory_mb measures here
    output_dir: Path
    failed: dict[str, str] = field(default_factory=dict)  # strategy -> its error, when one failed
    not_run: list[str] = field(default_factory=list)  # the strategies after a failed one

    def markdown(self) -> str:
        lines = [
            "| strategy | accuracy | macro-F1 | trainable params | wall (s) | train samples/s | peak memory (MB) |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        lines += [
            f"| {r.strategy} | {r.accuracy:.4f} | {r.f1_macro:.4f} | {r.trainable_parameters:,} | "
            f"{r.wall_seconds:.1f} | {r.train_samples_per_second:.1f} | {r.peak_memory_mb:.0f} |"
            for r in self.rows
        ]
        notes = [f"Peak memory: {self.memory}."]
        notes += [f"**{name} failed** (not in the table): {error}" for name, error in self.failed.items()]
        if self.not_run:
            notes.append(f"Not run (after the failure): {', '.join(self.not_run)}.")
        return "\n".join(lines) + "\n\n" + "\n\n".join(notes) + "\n"


@one_listing_per_folder()
def compare(config: RunConfig, strategies: list[str] | tuple[str, ...] = COMPARED_BY_DEFAULT) -> Comparison:
    """Train `config` once per strategy (each in `<output_dir>/<strategy>`) and tabulate the results.

    Args:
        config (`RunConfig`): the task, model and optimisation settings shared by every run; `strategy` and
            `output_dir` are set per run (each strategy's default learning rate applies when train.lr is unset).
        strategies (`list[str]`): registered strategy names, in the order to run them.

    Returns:
        `Comparison`: one row per strategy; written as comparison.md/.json/.png into config.output_dir.
    """
    default_logging()
    for name in strategies:
        STRATEGIES.get(name)  # an unknown name fails now, with the valid ones listed
    shared = prepare(config)
    # runs/<data>-<model>-compare unless set; checked as a run's folder is, before any strategy trains.
    root = Path(with_output_dir(replace(shared.config, output_dir=config.output_dir), kind="compare").output_dir)
    check_output_outside_data(str(root), shared.config.data.train, shared.config.data.validation)
    rows: list[Row] = []
    failure: tuple[str, Exception] | None = None
    for name in strategies:
        # The shared config: the task, model and columns resolved once against the data.
        run_config = replace(shared.config, strategy=name, output_dir=str(root / name))
        run = replace(shared, model=copy.deepcopy(shared.model))
        try:
            with _PeakMemory() as peak:
                start = time.perf_counter()
                result = train(run_config, prepared=run)
                wall = time.perf_counter() - start
        except Exception as err:  # noqa: BLE001 - the table is written for what ran, then err is raised
            failure = (name, err)
            break
        m = result.metrics
        rows.append(
            Row(
                name,
                m["accuracy"],
                m["f1_macro"],
                m["trainable_parameters"],
                wall,
                m["train_samples_per_second"],
                peak.megabytes,
                str(result.output_dir),
            )
        )
        logger.info("compare: %s done in %.1f s (accuracy %.4f)", name, wall, m["accuracy"])
    comparison = Comparison(rows, _PeakMemory.what(), root)
    if failure is not None:
        comparison.failed = {failure[0]: " ".join(str(failure[1]).split()) or type(failure[1]).__name__}
        comparison.not_run = list(strategies[len(rows) + 1 :])
    if process_state().is_main_process:
        _write(comparison)
    if failure is not None:
        name, err = failure
        if isinstance(err, HFTransferError):  # one line a user can act on, with where the rest went
            raise type(err)(f"compare: strategy {name!r} failed: {err} ({root}/comparison.md lists what ran).") from err
        raise err
    return comparison


def _write(comparison: Comparison) -> None:
    """comparison.md, .json and .png (the chart only when a strategy finished: an old one is removed)."""
    root, rows = comparison.output_dir, comparison.rows
    write_text_atomic(root / "comparison.md", comparison.markdown())
    saved = {"memory": comparison.memory, "rows": [asdict(r) for r in rows]}
    write_json(root / "comparison.json", {**saved, "failed": comparison.failed, "not_run": comparison.not_run})
    chart = root / "comparison.png"
    if rows:
        plot_comparison([r.strategy for r in rows], [r.accuracy for r in rows], [r.wall_seconds for r in rows], chart)
    else:
        chart.unlink(missing_ok=True)


class _PeakMemory:
    """Peak memory while a block runs: the accelerator's allocator peak, or on CPU the highest resident set
    size above the one the block started at (sampled every 50 ms: a process's own peak counter never
    goes down, so it cannot tell one run from the next)."""

    def __init__(self) -> None:
        self.megabytes = 0.0
        self._stop = threading.Event()

    @staticmethod
    def what() -> str:
        if torch.cuda.is_available():
            return "torch.cuda.max_memory_allocated during the run"
        return "resident set size above the run's start, sampled every 50 ms (CPU)"

    def __enter__(self) -> _PeakMemory:
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
            return self
        process = psutil.Process()
        self._start = self._peak = process.memory_info().rss

        def sample() -> None:
            while not self._stop.wait(0.05):
                self._peak = max(self._peak, process.memory_info().rss)

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if torch.cuda.is_available():
            self.megabytes = torch.cuda.max_memory_allocated() / 2**20
            return
        self._stop.set()
        self._thread.join()
        self.megabytes = (self._peak - self._start) / 2**20


def load_comparison(output_dir: str | Path) -> dict[str, Any]:
    """The JSON a comparison wrote."""
    return json_safe(json.loads((Path(output_dir) / "comparison.json").read_text()))
