"""The fine-tuning loop, shared by every adapter and strategy: Accelerate end to end.

The engine owns its Accelerator and knows only nn.Module and `FitData` (the training examples and the
factory of their `TrainLoader`, the validation set, a collate function and a logits function), nothing
of modalities, nor of the kind of training data (map-style or a stream: data/loaders.py). `fit` reads
top to bottom: prepare, resume, then epoch after epoch `_train_epoch` (optimizer steps; the loss stays
on the device and is read every `logging_steps`), `_evaluate` and `_checkpoint` on their cadence;
finally the best weights come back. As timm's train.py splits train_one_epoch / validate /
CheckpointSaver.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields, replace
from functools import partial
from pathlib import Path
from typing import Any

import psutil
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.tracking import get_available_trackers
from accelerate.utils import SAFE_WEIGHTS_NAME, DataLoaderConfiguration, DistributedType, ProjectConfiguration
from safetensors.torch import save_file
from torch import nn
from torch.optim.lr_scheduler import LambdaLR
from torch.utils.data import DataLoader
from torch.utils.data import Dataset as TorchDataset
from tqdm.auto import tqdm

from ..catalog.weights import read_safetensors
from ..config.schema import TrainConfig
from ..core.atomic import atomic_path
from ..core.errors import ConfigError, LaunchError, RunDirError, TrainingDiverged
from ..core.rundir import RunDir
from ..data.loaders import LoaderFactory, LoaderSpec, MapLoader, TrainLoader, torch_loader
from ..data.pipeline import LoaderSettings, loader_settings
from .autobatch import fit_finding_batch_size
from .checkpoints import BEST_FILE, STATE_FILE, checkpoint_identity, identity_mismatch, read_state, verify_checkpoint
from .distributed import (
    check_distributed_setup,
    cpu_launch,
    is_sharded,
    launched_processes,
    load_full_state_dict,
    process_state,
    release_accelerator_state,
    structure_copy,
)
from .evaluation import Predictions, gather_logits, summary_metrics
from .metrics import load_metric
from .train_mode import set_train_mode

# Named for the engine (hf_transfer.engine), as its log lines have always been, not for this file.
logger = get_logger(__package__)

Logits = Callable[[nn.Module, dict[str, torch.Tensor]], torch.Tensor]


@dataclass
class FitData:
    """What the engine trains on: the training examples and how to read them, the validation examples (a
    map-style dataset), how to batch them, how to call the model.

    `loader` builds the fit's `TrainLoader` (data/loaders.py) from `train`, `collate` and the engine's
    `LoaderSpec`: `MapLoader` (the default: a map-style dataset, epoch after epoch) or `StreamLoader`
    (data/streaming.py: a `datasets.IterableDataset`, no length, counted in train.max_steps). The caller
    chooses it where it prepares the data; the engine trains from whichever it gets and writes its position
    into every checkpoint."""

    train: Any
    eval: TorchDataset
    collate: Callable[[list[dict[str, Any]]], dict[str, torch.Tensor]]
    logits: Logits
    loader: LoaderFactory = MapLoader


@dataclass(frozen=True)
class FitPlan:
    """How one `Engine.fit` trains, decided by its caller before it starts (train.py's stages): the engine
    reads it and keeps nothing of it, so two fits of one engine share no settings.

    Attributes:
        settings (`TrainConfig`, *optional*): this fit's settings (e.g. one stage of LP-FT); default the
            engine's. A second fit gets a new optimizer and schedule: nothing carries over.
        identity (`dict`, *optional*): what makes this run this run (task, model, strategy, data): recorded in
            every checkpoint; resuming a checkpoint with another identity is refused.
        tracker_config (`dict`, *optional*): hyperparameters for the trackers (scalars only).
        param_groups (`list[dict]`, *optional*): the optimizer's parameter groups (e.g. layer-wise learning
            rates); default: every trainable parameter at `settings.lr`, no decay on 1-d parameters.
        step_offset (`int`, defaults to 0): optimizer steps the run's earlier stages took: checkpoint folders
            are numbered across the whole run, so a later stage's never replace an earlier one's.
        earlier_stages (`tuple[dict, ...]`): what the run's earlier stages reported (JSON values): kept in this
            fit's checkpoints and returned in `FitResult.earlier_stages`, also after a resume.
    """

    settings: TrainConfig | None = None
    identity: dict[str, Any] | None = None
    tracker_config: dict[str, Any] | None = None
    param_groups: list[dict[str, Any]] | None = None
    step_offset: int = 0
    earlier_stages: tuple[dict[str, Any], ...] = ()


# What to do when the run's best weights (checkpoints/best, or a checkpoint's copy) cannot be read.
_DAMAGED_BEST = "the run folder is damaged; resume from an earlier checkpoint, or start a new run."


@dataclass
class TrainState:
    """Where training stands; saved as JSON beside each Accelerate checkpoint."""

    labels: list[str] = field(default_factory=list)
    epoch: int = 0  # the epoch in progress
    batches_in_epoch: int = 0  # micro-batches of that epoch already consumed
    global_step: int = 0  # optimizer steps
    best_value: float | None = None
    best_epoch: int | None = None
    best_metrics: dict[str, float] = field(default_factory=dict)
    evals_without_improvement: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)  # one entry per evaluation
    train_loss: list[list[float]] = field(default_factory=list)  # [step, mean loss since the previous entry]
    scheduler: dict[str, Any] | None = None  # the learning-rate schedule's state (plain numbers)
    identity: dict[str, Any] | None = None  # which run this is (task, model, strategy, data, labels)
    step_offset: int = 0  # optimizer steps of the run's earlier stages: checkpoints are named run-wide
    # What the run's earlier stages reported (plain values the caller hands over): kept in every checkpoint, so
    # a run resumed in a later stage still reports the stages it did not run again.
    earlier_stages: list[dict[str, Any]] = field(default_factory=list)
    nonfinite_losses: int = 0  # steps skipped for a NaN/inf loss (train.max_nonfinite_losses > 0)
    batch_size: int | None = None  # per process: the size of the micro-batches batches_in_epoch counts


@dataclass
class FitResult:
    """What `Engine.fit` returns.

    Attributes:
        best_metrics (`dict[str, float]`): validation metrics of the best evaluation (`train.metric_for_best_model`).
        best_epoch (`int | None`): the epoch of that evaluation.
        history (`list[dict]`): one entry per evaluation: epoch, step and the metrics.
        train_loss (`list[[step, loss]]`): the mean training loss of each logging window.
        global_step (`int`): optimizer steps taken (in this fit).
        train_runtime (`float`): seconds in the training loop (evaluations and checkpoints included).
        train_samples_per_second (`float`): training examples (all processes) per second of that time.
        step_offset (`int`): optimizer steps of the run's earlier stages (0 for one-stage runs).
        earlier_stages (`list[dict]`): what the run's earlier stages reported, as handed to `fit` (or, after a
            resume, as the checkpoint kept it).
        best_predictions (`Predictions | None`): validation logits of the best evaluation, when it ran in
            this process (not before a resume).
        unsharded_model (`nn.Module | None`): under FSDP, on the main process, a plain copy of the model with
            the best weights (what to save); None otherwise.
        batch_size (`int`), gradient_accumulation_steps (`int`): what the fit trained with, per process
            (`train.auto_find_batch_size` halves the one and doubles the other after an out-of-memory error).
    """

    best_metrics: dict[str, float]
    best_epoch: int | None
    history: list[dict[str, Any]]
    train_loss: list[list[float]]
    global_step: int
    train_runtime: float
    train_samples_per_second: float
    step_offset: int = 0
    earlier_stages: list[dict[str, Any]] = field(default_factory=list)
    # Validation logits of the best epoch; None when that epoch ran before a resume.
    best_predictions: Predictions | None = None
    # Under FSDP, on the main process: a plain copy of the model holding the best weights (the trained model
    # stays sharded); None otherwise, where the model passed to fit holds them.
    unsharded_model: nn.Module | None = None
    batch_size: int = 0  # per process, as trained (train.auto_find_batch_size may have lowered it)
    gradient_accumulation_steps: int = 1  # as trained


@dataclass(frozen=True)
class RunSetup:
    """What a run actually trains with, whoever chose it (the config, `accelerate config`, launch flags):
    logged when the engine starts, recorded in run_info.json and shown on the model card."""

    num_processes: int
    distributed_type: str  # Accelerate's: NO, MULTI_CPU, MULTI_GPU, FSDP, ...
    device: str  # of the main process: cpu, cuda, mps, ...
    mixed_precision: str  # in effect: no, fp16, bf16 (fp8 through `accelerate config`); fp16 on a CPU runs as no
    batch_size_per_device: int | None  # None until the first fit when train.batch_size is auto
    gradient_accumulation_steps: int
    effective_batch_size: int | None  # examples per optimizer step, over every process

    def describe(self) -> str:
        n = self.num_processes
        where = self.device if self.distributed_type == "NO" else f"{self.device}, {self.distributed_type}"
        return (
            f"{n} process{'es' if n > 1 else ''} ({where}), mixed precision "
            f"{self.mixed_precision}; batch {self.batch_size_per_device} per device x {n} x "
            f"{self.gradient_accumulation_steps} accumulation step(s) = {self.effective_batch_size} examples per "
            "optimizer step"
        )


@dataclass
class _Steps:
    steps_per_epoch: int
    total_steps: int
    epochs: int


@dataclass
class _Run:
    """Everything one `fit` call moves between its steps."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    loader: TrainLoader
    eval_dl: DataLoader
    data: FitData
    state: TrainState
    steps: _Steps
    settings: TrainConfig
    progress: tqdm
    plain: nn.Module | None  # under FSDP, on the main process: the model's structure, to save it whole
    losses: list[torch.Tensor] = field(default_factory=list)  # this logging window's losses, on the device
    loss_steps: list[int] = field(default_factory=list)  # the optimizer step each of them belongs to
    samples: int = 0
    best_predictions: Predictions | None = None
    best_step: int = -1  # the optimizer step whose weights the best-weights file holds, key for key (-1: none)
    last_eval_step: int = -1
    evaluations: int = 0
    eval_seconds: float = 0.0  # in _evaluate, and in _checkpoint: parts of the fit's runtime, logged at its end
    checkpoint_seconds: float = 0.0


class Engine:
    """The training loop of every run: one Accelerator, built from the run's training settings.

    Args:
        settings (`TrainConfig`): optimisation, evaluation and checkpoint settings; `settings.lr` must be set
            (train() resolves the strategy's default).
        output_dir (`RunDir | str | Path`): the run folder: checkpoints, best weights and tracker logs go there.
            A run passes its one RunDir (the one that claimed the folder); a path makes one.
        num_workers (`int | None`, defaults to `None`): DataLoader workers per process; None chooses from the
            spare cores (see `datapipe.loader_settings`).

    Example (what `train` does, by hand):

        engine = Engine(replace(config.train, lr=1e-3), "runs/x")
        data = FitData(
            train=ExampleView(...), eval=ExampleView(...), collate=adapter.inputs.collate, logits=adapter.models.logits
        )
        result = engine.fit(model, data, labels)
        engine.close()
    """

    def __init__(self, settings: TrainConfig, output_dir: RunDir | str | Path, num_workers: int | None = None) -> None:
        self.settings = settings
        self.run_dir = RunDir.of(output_dir)
        self.output_dir = self.run_dir.root
        self._fits = 0
        # When this engine's first batch arrived and whether its first optimizer step was taken (both logged once).
        self._first_batch_at: float | None = None
        self._stepped = False
        available = {str(t) for t in get_available_trackers()}
        missing = [t for t in settings.log_with if t != "all" and t not in available]
        if missing:  # Accelerate drops them silently; say so once
            logging.getLogger(__package__).warning(
                "Trackers %s are not installed and will not log (installed: %s)", missing, sorted(available)
            )
        process_state()  # N processes launched without GPUs: a process group over the CPUs, as one run
        self.accelerator = Accelerator(
            cpu=cpu_launch(),
            mixed_precision=settings.mixed_precision,  # None: from `accelerate config` / launch flags
            gradient_accumulation_steps=settings.gradient_accumulation_steps,
            log_with=settings.log_with or None,
            project_config=ProjectConfiguration(project_dir=str(self.output_dir), logging_dir=str(self.run_dir.logs)),
            # Seeded, epoch-dependent shuffling: a resumed run sees the same order as an uninterrupted one.
            dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=settings.seed),
            dynamo_backend="inductor" if settings.compile else None,
            # The schedule is stepped here once per optimizer step, whatever the number of processes.
            step_scheduler_with_optimizer=False,
        )
        self._model_file: Path | None = None  # see _checkpoint
        self.accelerator.register_save_state_pre_hook(self._link_model_file)
        try:
            check_launch(self.accelerator.num_processes, self.accelerator.device)
            check_distributed_setup(self.accelerator)
        except (LaunchError, ConfigError):
            release_accelerator_state()  # this Accelerator is never used: the next one may differ
            raise
        # At train.batch_size: the config's value, or `accelerate config`'s (train.auto_find_batch_size scales it).
        self.accumulation = self.accelerator.gradient_accumulation_steps
        chosen = "train.mixed_precision" if settings.mixed_precision else "`accelerate config` / launch flags"
        asked = self.accelerator.mixed_precision
        if self.setup.mixed_precision != asked:
            logger.warning(
                f"Mixed precision {asked} (from {chosen}) does not run on {self.accelerator.device.type}: this run "
                f"trains in full precision (fp32), and its config.yaml, run_info.json and card say so "
                f"(mixed precision {self.setup.mixed_precision}). On CPUs, bf16 runs: train.mixed_precision=bf16."
            )
        self._setup_note = f"(mixed precision from {chosen})"
        if settings.batch_size is not None:  # else (train.batch_size auto) once the first fit has its batch size
            self._log_setup(settings.batch_size)
        local_processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        self.loader_settings: LoaderSettings = loader_settings(num_workers, self.accelerator.device, local_processes)
        # Pinned host memory and asynchronous copies go together (read by `prepare` when it wraps loaders).
        self.accelerator.dataloader_config.non_blocking = self.loader_settings.pin_memory

    def _log_setup(self, batch_size: int) -> None:
        setup = self._setup(batch_size, self.accelerator.gradient_accumulation_steps)
        logger.info(f"Setup: {setup.describe()} {self._setup_note}")
        self._setup_note = None

    # ---------------------------------------------------------------------------- for the caller
    @property
    def is_main_process(self) -> bool:
        return self.accelerator.is_main_process

    @property
    def setup(self) -> RunSetup:
        """The setup at the engine's settings (batch None while train.batch_size is auto): see `trained_setup`."""
        return self._setup(self.settings.batch_size, self.accelerator.gradient_accumulation_steps)

    def trained_setup(self, fit: FitResult) -> RunSetup:
        """The setup `fit` trained with: its batch and accumulation (train.auto_find_batch_size may have changed
        both), for run_info.json and the card."""
        return self._setup(fit.batch_size, fit.gradient_accumulation_steps)

    def _setup(self, batch: int | None, accumulation: int) -> RunSetup:
        acc = self.accelerator
        return RunSetup(
            num_processes=acc.num_processes,
            distributed_type=acc.distributed_type.value,
            device=acc.device.type,
            mixed_precision=precision_in_effect(acc),
            batch_size_per_device=batch,
            gradient_accumulation_steps=accumulation,
            effective_batch_size=None if batch is None else batch * accumulation * acc.num_processes,
        )

    @property
    def device(self) -> torch.device:
        return self.accelerator.device

    @property
    def num_processes(self) -> int:
        return self.accelerator.num_processes

    @property
    def sharded(self) -> bool:
        """Whether each process holds only a shard of the parameters (FSDP)."""
        return is_sharded(self.accelerator)

    @contextmanager
    def main_process_first(self) -> Iterator[None]:
        """The main process runs the block first (e.g. builds a cache), the others after it (and read it)."""
        with self.accelerator.main_process_first():
            yield

    def wait_for_everyone(self) -> None:
        self.accelerator.wait_for_everyone()

    def broadcast(self, value: Any) -> Any:
        """The main process's `value`, on every process (so that all of them take the same decision)."""
        from accelerate.utils import broadcast_object_list

        if self.accelerator.num_processes == 1:
            return value
        return broadcast_object_list([value])[0]

    def unwrap(self, model: nn.Module) -> nn.Module:
        return self.accelerator.unwrap_model(model)

    def make_loader(self, dataset: TorchDataset, collate: Callable, batch_size: int, train: bool = False) -> DataLoader:
        """A DataLoader with this machine's worker settings (not yet prepared)."""
        return torch_loader(dataset, collate, batch_size, self.loader_settings, self.settings.seed, train)

    def gather(
        self,
        fn: Callable[[dict[str, torch.Tensor]], torch.Tensor],
        dataset: TorchDataset,
        collate: Callable,
        batch_size: int,
    ) -> torch.Tensor:
        """`fn` over every batch of `dataset` (no gradients, under autocast), each process its shard,
        reassembled in dataset order on every process, on the CPU."""
        loader = self.accelerator.prepare_data_loader(self.make_loader(dataset, collate, batch_size))
        chunks = []
        with torch.no_grad():
            for batch in loader:
                batch = {k: v for k, v in batch.items() if k != "labels"}
                with self.accelerator.autocast():
                    out = fn(batch).float()
                chunks.append(self.accelerator.gather_for_metrics(out).cpu())
        return torch.cat(chunks)

    def predict(
        self, model: nn.Module, logits: Logits, dataset: TorchDataset, collate: Callable, batch_size: int
    ) -> Predictions:
        """Logits (and references) for `dataset`, sharded across processes and gathered in order."""
        loader = self.accelerator.prepare_data_loader(self.make_loader(dataset, collate, batch_size))
        return gather_logits(model, logits, loader, self.accelerator)

    def close(self) -> None:
        """Flush the trackers. The process group stays up, so one process can run several trainings
        (chained transfer); Accelerate's global state is reset so the next run may choose another
        mixed precision (it refuses to change it otherwise)."""
        for tracker in self.accelerator.trackers:
            tracker.finish()
        release_accelerator_state()

    # ------------------------------------------------------------------------------------- fit
    def fit(self, model: nn.Module, data: FitData, labels: list[str], plan: FitPlan | None = None) -> FitResult:
        """Train `model` on `data`, evaluating and checkpointing on the settings' cadence, and load the best
        weights back into it.

        Args:
            model (`nn.Module`): what trains (frozen parameters never reach the optimizer).
            data (`FitData`): the training and validation examples, their collate and logits functions.
            labels (`list[str]`): class names (metrics, and the label check when resuming).
            plan (`FitPlan`, *optional*): how this fit trains (its settings, the run's identity, its place among
                the run's stages); default: the engine's settings, one stage.

        Returns:
            `FitResult`.
        """
        plan = plan or FitPlan()
        settings = plan.settings or self.settings
        if not settings.auto_find_batch_size:
            return self._fit(model, data, labels, replace(plan, settings=settings))
        return fit_finding_batch_size(
            self.accelerator,
            lambda s: self._fit(model, data, labels, replace(plan, settings=s)),
            model,
            settings,
            self.accumulation,
        )

    def _fit(self, model: nn.Module, data: FitData, labels: list[str], plan: FitPlan) -> FitResult:
        """One fit at `plan.settings` (set): prepare, resume or start, the epochs, the best weights back."""
        run = self._start(model, data, labels, plan)
        state, s = run.state, run.settings
        start = time.perf_counter()
        stop = state.global_step >= run.steps.total_steps
        while state.epoch < run.steps.epochs and not stop:
            stop = self._train_epoch(run)
            self._log_losses(run)
            # Every epoch's end, or with eval_every_steps the steps it names (an epoch's last one is left here), and
            # the run's end.
            every = s.eval_every_steps
            due = not every or state.global_step % every == 0 or stop or self._last_epoch(run)
            if run.last_eval_step != state.global_step and due:
                stop = self._evaluate(run) or stop
            if state.epoch == 0:
                _warn_if_collapsed(state, len(labels), s.lr)
            state.epoch, state.batches_in_epoch = state.epoch + 1, 0
            self._checkpoint(run)
        run.progress.close()
        return self._finish(run, time.perf_counter() - start)

    def _start(self, model: nn.Module, data: FitData, labels: list[str], plan: FitPlan) -> _Run:
        """Everything the loop needs, prepared by Accelerate: loaders, optimizer, schedule, and the state,
        fresh or resumed."""
        if self._fits:
            self.accelerator.free_memory()  # the previous fit's model, optimizer and loaders
        self._fits += 1
        s, acc = plan.settings, self.accelerator
        _check_resolved(s)
        spec = LoaderSpec(s.batch_size, s.seed, self.loader_settings, acc.device, acc.process_index, acc.num_processes)
        loader = data.loader(data.train, data.collate, spec)
        _check_length(s, loader)
        if self._setup_note is not None:
            self._log_setup(s.batch_size)
        for name in s.extra_metrics:  # an unloadable metric fails now, not after the first epoch
            load_metric(name)
        eval_dl = self.make_loader(data.eval, data.collate, s.eval_batch_size or s.batch_size)
        # Fused AdamW (one kernel per parameter, as the Trainer's default): torch's own default on a CPU is a
        # Python loop over the parameters, measured at a third of a MiniLM step (benchmarks/speed.py).
        fused = True if acc.device.type in ("cpu", "cuda") else None
        groups = plan.param_groups or _param_groups(model, s.weight_decay)
        optimizer = torch.optim.AdamW(groups, lr=s.lr, fused=fused)
        # Under FSDP the model is sharded in place: the main process keeps its structure to save it whole later.
        plain = structure_copy(model) if self.sharded and acc.is_main_process else None
        # One prepare call for everything (DeepSpeed reads the micro-batch size from the loaders in it).
        model, optimizer, eval_dl = loader.prepare(acc, model, optimizer, eval_dl)
        per_epoch = loader.batches_per_epoch  # None: a stream, one "epoch" of max_steps
        steps = self._steps(s, s.max_steps * acc.gradient_accumulation_steps if per_epoch is None else per_epoch)
        scheduler = lr_schedule(s.scheduler, optimizer, int(s.warmup_ratio * steps.total_steps), steps.total_steps)
        state = self._state(plan, labels, scheduler, loader)
        if self._fits == 1:
            acc.init_trackers(RunDir.TRACKER_PROJECT, config=plan.tracker_config)
        logger.info(
            f"Training {steps.epochs} epochs, {steps.total_steps} optimizer steps; {acc.num_processes} process(es) "
            f"x batch {s.batch_size} x accumulation {acc.gradient_accumulation_steps}; lr {s.lr:g} "
            f"({s.scheduler}, {s.warmup_ratio:g} warm-up); "
            f"{self.loader_settings.num_workers} data worker(s) per process"
        )
        progress = tqdm(
            total=steps.total_steps,
            initial=state.global_step,
            desc="train",
            disable=not (acc.is_local_main_process and s.progress_bar),
        )
        return _Run(model, optimizer, scheduler, loader, eval_dl, data, state, steps, s, progress, plain)

    def _state(self, plan: FitPlan, labels: list[str], scheduler: Any, loader: TrainLoader) -> TrainState:
        """Where the fit starts: the checkpoint it resumes, or step 0 of its stage."""
        identity = {**(plan.identity or {}), "labels": list(labels)}
        if plan.settings.resume_from_checkpoint:
            return self._resume(plan.settings, identity, scheduler, loader)
        return TrainState(
            labels=list(labels),
            identity=identity,
            step_offset=plan.step_offset,
            batch_size=plan.settings.batch_size,
            earlier_stages=list(plan.earlier_stages),
        )

    def _finish(self, run: _Run, runtime: float) -> FitResult:
        """The fit's account, after its time split is logged and the best weights are back in the model."""
        state, s = run.state, run.settings
        logger.info(time_split(runtime, run.eval_seconds, run.checkpoint_seconds, run.evaluations))
        eval_every = s.eval_every_steps
        advice = evaluation_advice(runtime, run.eval_seconds, len(run.data.eval), run.steps.steps_per_epoch, eval_every)
        if advice:
            logger.info(advice)
        plain = self._load_best(run.model, run.plain)
        return FitResult(
            unsharded_model=plain,
            best_metrics=state.best_metrics,
            best_predictions=run.best_predictions,
            best_epoch=state.best_epoch,
            history=state.history,
            train_loss=state.train_loss,
            global_step=state.global_step,
            train_runtime=runtime,
            train_samples_per_second=run.samples / runtime if runtime > 0 else 0.0,
            step_offset=state.step_offset,
            earlier_stages=state.earlier_stages,
            batch_size=s.batch_size,
            gradient_accumulation_steps=self.accelerator.gradient_accumulation_steps,
        )

    # -------------------------------------------------------------------------- one epoch, steps
    def _train_epoch(self, run: _Run) -> bool:
        """Train until the epoch ends; True when the run must stop (last step, early stopping)."""
        acc, s, state = self.accelerator, run.settings, run.state
        batches = run.loader.epoch(state.epoch)  # from the loader's position (restored by _resume)
        # The epoch's last batch: a step cadence falling on it is left to the epoch's end, which evaluates and
        # checkpoints that step once (a stream has no epochs, None: its run ends at max_steps).
        last_batch = run.loader.batches_per_epoch
        set_train_mode(run.model, bool(s.freeze_norm_statistics))
        for batch in batches:
            if self._first_batch_at is None:
                self._first_batch_at = process_seconds()
            with acc.accumulate(run.model):
                targets = batch.pop("labels")
                logits = run.data.logits(run.model, batch)
                loss = F.cross_entropy(logits.float(), targets, label_smoothing=s.label_smoothing)
                if s.max_nonfinite_losses and self._skip_nonfinite(loss, run):
                    loss = loss.new_zeros(())  # this batch teaches nothing; the window's mean stays finite
                else:
                    acc.backward(loss)
                    if acc.sync_gradients and s.max_grad_norm is not None:
                        acc.clip_grad_norm_(run.model.parameters(), s.max_grad_norm)
                    run.optimizer.step()
                run.optimizer.zero_grad()
            state.batches_in_epoch += 1
            run.samples += targets.shape[0] * acc.num_processes
            run.losses.append(loss.detach())  # no .item(): the host never waits for the device here
            run.loss_steps.append(state.global_step + 1)
            if not acc.sync_gradients:
                continue
            run.scheduler.step()
            state.global_step += 1
            if not self._stepped:
                self._stepped = True
                logger.info(
                    f"Training started {self._first_batch_at:.1f} s after the process did (imports, data, model and "
                    f"setup before it); the first optimizer step took {process_seconds() - self._first_batch_at:.1f} s"
                )
            run.progress.update(1)
            if state.global_step % s.logging_steps == 0:
                self._log_losses(run)
            if state.global_step >= run.steps.total_steps:
                return True
            if state.batches_in_epoch == last_batch:
                continue
            if s.eval_every_steps and state.global_step % s.eval_every_steps == 0:
                self._log_losses(run)
                if self._evaluate(run):
                    return True
                self._checkpoint(run)
                set_train_mode(run.model, bool(s.freeze_norm_statistics))
            elif s.checkpoint_every_steps and state.global_step % s.checkpoint_every_steps == 0:
                self._log_losses(run)
                self._checkpoint(run)
        return False

    def _log_losses(self, run: _Run) -> None:
        """Read the window's losses from the device (one sync, every process's), log their mean, and
        stop the run at a non-finite loss, naming the first step it happened at."""
        if not run.losses:
            return
        values = self.accelerator.gather(torch.stack(run.losses).float()).cpu().tolist()
        steps = run.loss_steps * (len(values) // len(run.loss_steps))
        run.losses, run.loss_steps = [], []
        state = run.state
        bad = [step for step, value in zip(steps, values, strict=True) if not math.isfinite(value)]
        if bad:
            raise TrainingDiverged(self._divergence_message(min(bad), state, run.settings))
        mean = sum(values) / len(values)
        state.train_loss.append([state.global_step, mean])
        lr = run.scheduler.get_last_lr()[0]
        self.accelerator.log({"train/loss": mean, "train/lr": lr}, step=state.global_step)
        run.progress.set_postfix(loss=f"{mean:.4f}", epoch=state.epoch)

    def _skip_nonfinite(self, loss: torch.Tensor, run: _Run) -> bool:
        """With train.max_nonfinite_losses > 0: whether to skip this batch's update (its loss is NaN/inf on
        some process). Costs a host sync per step, so only then. Past the limit, the run stops."""
        finite = bool(self.accelerator.gather(torch.isfinite(loss.detach()).reshape(1)).all())
        if finite:
            return False
        run.state.nonfinite_losses += 1
        if run.state.nonfinite_losses > run.settings.max_nonfinite_losses:
            raise TrainingDiverged(self._divergence_message(run.state.global_step + 1, run.state, run.settings))
        logging.getLogger(__package__).warning(
            "Non-finite loss at step %d: update skipped (%d of train.max_nonfinite_losses=%d)",
            run.state.global_step + 1,
            run.state.nonfinite_losses,
            run.settings.max_nonfinite_losses,
        )
        return True

    def _divergence_message(self, step: int, state: TrainState, s: TrainConfig) -> str:
        last = self.run_dir.latest_checkpoint()
        kept = f"the last good checkpoint is {last}" if last else "no checkpoint was written before it"
        best = self.run_dir.best_weights
        if best.is_file():
            kept += f" and the best weights so far are in {best}"
        return (
            f"The training loss became NaN/inf at optimizer step {step} (epoch {state.epoch}); the run stopped, "
            f"{kept}. Lower train.lr (now {s.lr:g}), keep train.max_grad_norm set, or use "
            "train.mixed_precision=bf16 instead of fp16."
        )

    def _last_epoch(self, run: _Run) -> bool:
        return run.state.epoch + 1 >= run.steps.epochs

    # ------------------------------------------------------------------------------ evaluation
    def _evaluate(self, run: _Run) -> bool:
        """Validation metrics now; keeps the best weights. True when early stopping says stop."""
        acc, state, tick = self.accelerator, run.state, time.perf_counter()
        predictions = gather_logits(run.model, run.data.logits, run.eval_dl, acc)
        metrics = summary_metrics(predictions, len(state.labels), run.settings.extra_metrics)
        improved = self._record(state, metrics, run)
        run.last_eval_step = state.global_step
        if improved:
            run.best_predictions = predictions
        acc.log({f"eval/{k}": v for k, v in metrics.items()}, step=state.global_step)
        shown = " ".join(f"{k}={v:.4f}" for k, v in metrics.items())
        logger.info(f"epoch {state.epoch} step {state.global_step}: {shown}" + (" (best)" if improved else ""))
        patience = run.settings.early_stopping_patience
        stop = patience is not None and state.evals_without_improvement >= patience
        if stop:
            logger.info(f"Early stopping: {patience} evaluations without improvement")
        run.evaluations += 1
        run.eval_seconds += time.perf_counter() - tick
        return stop

    def _record(self, state: TrainState, metrics: dict[str, float], run: _Run) -> bool:
        key = run.settings.metric_for_best_model
        value = metrics[key]
        state.history.append({"epoch": state.epoch, "step": state.global_step, **metrics})
        # A non-finite metric is never the best, whatever came before it.
        better = math.isfinite(value) and (
            state.best_value is None or (value < state.best_value if key == "loss" else value > state.best_value)
        )
        if better:
            state.best_value, state.best_epoch, state.best_metrics = value, state.epoch, dict(metrics)
            state.evals_without_improvement = 0
            run.best_step = state.global_step if self._save_best(run.model) else -1
        else:
            state.evals_without_improvement += 1
        return better

    # ----------------------------------------------------------------------------- checkpoints
    def _save_best(self, model: nn.Module) -> bool:
        """Writes the best-weights file; True when this process wrote it and it holds exactly the keys
        Accelerate's save_state would write for `model` (one process, no wrapper, no tied weights):
        _checkpoint may then link it."""
        weights = self.accelerator.get_state_dict(model)  # collective under FSDP/DeepSpeed: every rank calls it
        tied = True  # unknown on a process that writes nothing
        if self.accelerator.is_main_process:
            unshared, tied = _unshare(weights)
            with atomic_path(self.run_dir.best_weights) as tmp:  # a crash leaves the previous best intact
                save_file(unshared, str(tmp))
        self.accelerator.wait_for_everyone()
        return self.accelerator.num_processes == 1 and self.unwrap(model) is model and not tied

    def _load_best(self, model: nn.Module, plain: nn.Module | None) -> nn.Module | None:
        """The best weights back into `model`; under FSDP also whole into `plain` (main process), returned."""
        path = self.run_dir.best_weights
        self.accelerator.wait_for_everyone()
        if not self.sharded:
            if path.is_file():
                self.unwrap(model).load_state_dict(
                    read_safetensors(path, RunDirError, "Best-weights file", _DAMAGED_BEST)
                )
            return None
        # The main process reads the file, every process loads its shard; with no best file (no evaluation
        # ever improved) the plain copy takes the last weights, gathered.
        main = self.accelerator.is_main_process
        if self.broadcast(path.is_file()):
            weights = read_safetensors(path, RunDirError, "Best-weights file", _DAMAGED_BEST) if main else {}
            load_full_state_dict(model, weights, main)
        else:
            weights = self.accelerator.get_state_dict(model)
        if main:
            plain.load_state_dict(weights, assign=True)
        return plain

    def _checkpoint(self, run: _Run) -> None:
        acc, state, tick = self.accelerator, run.state, time.perf_counter()
        state.scheduler = _plain(run.scheduler.state_dict())
        step = state.step_offset + state.global_step
        # Weights saved as the best at this very step are the checkpoint's model: linked, not written twice.
        self._model_file = self.run_dir.best_weights if run.best_step == state.global_step else None
        with self.run_dir.write_checkpoint(step, commit=acc.is_main_process) as tmp:
            try:
                acc.save_state(str(tmp))
            finally:
                self._model_file = None
            # The training loader's position (every kind of data), JSON, read back by _resume: the main process's
            # alone when every process shares it (only the global main process writes files), else each one's.
            if acc.is_main_process or not run.loader.shared_position:
                file = self.run_dir.loader_state(tmp, _position_rank(run.loader, acc.process_index))
                file.write_text(json.dumps(run.loader.state_dict()))
            acc.wait_for_everyone()  # every process has written its part (its RNG states) before the rename
            if acc.is_main_process:
                (tmp / STATE_FILE).write_text(json.dumps(asdict(state), indent=2))
                if self.run_dir.best_weights.is_file():  # the best weights travel with the checkpoint
                    _link_or_copy(self.run_dir.best_weights, tmp / BEST_FILE)
        if acc.is_main_process:  # this run's own: never another run's
            self.run_dir.prune_checkpoints(
                run.settings.save_total_limit, lambda path: checkpoint_identity(path) == state.identity
            )
        acc.wait_for_everyone()
        run.checkpoint_seconds += time.perf_counter() - tick

    def _link_model_file(self, models: list[nn.Module], weights: list[dict[str, Any]], output_dir: str) -> None:
        """Accelerate's save_state pre-hook: with `_model_file` set (one model, its weights that file's), the
        checkpoint's model file is a hard link to it, and Accelerate, its weights list emptied, writes none."""
        if self._model_file is not None and len(weights) == 1:
            weights.clear()
            _link_or_copy(self._model_file, Path(output_dir) / SAFE_WEIGHTS_NAME)

    def _resume(self, s: TrainConfig, identity: dict[str, Any], scheduler: Any, loader: TrainLoader) -> TrainState:
        where = s.resume_from_checkpoint
        path = self.run_dir.latest_checkpoint() if where == "latest" else Path(where)
        if path is None or not (path / STATE_FILE).is_file():
            raise ConfigError(
                f"No checkpoint to resume from at {where!r}"
                + (f" (looked in {self.run_dir.checkpoints})" if where == "latest" else "")
            )
        saved = read_state(path)
        unknown = sorted(set(saved) - {f.name for f in fields(TrainState)})
        if unknown:
            raise RunDirError(
                f"Checkpoint file {path / STATE_FILE} holds keys this version does not write ({', '.join(unknown)}): "
                "it was written by another version or edited. Resume from another checkpoint, or start a new run."
            )
        state = TrainState(**saved)
        if state.batch_size and state.batch_size != s.batch_size:  # e.g. auto_find_batch_size lowered it
            # Checkpoints fall on optimizer steps: the examples consumed fill whole micro-batches of either size.
            state.batches_in_epoch = state.batches_in_epoch * state.batch_size // s.batch_size
        state.batch_size = s.batch_size
        if state.labels != identity["labels"]:
            raise ConfigError(
                f"Checkpoint {path} was trained on labels {state.labels}, but this run's data has "
                f"{identity['labels']}. Resume with the same data, or start a new run (e.g. with this run's "
                "output_dir as `model:`)."
            )
        mismatch = identity_mismatch(state.identity, identity)
        if mismatch:
            raise RunDirError(
                f"Checkpoint {path} belongs to another run ({mismatch}). Resume it with that run's settings, or "
                "start this run in a new output_dir."
            )
        if state.best_epoch is not None and not (path / BEST_FILE).is_file():
            raise RunDirError(
                f"Checkpoint {path} records a best epoch ({state.best_epoch}) but not its weights ({BEST_FILE}): "
                "the model this run would save could not be the one its metrics describe. Resume from a complete "
                "checkpoint, or start a new run."
            )
        rank = _position_rank(loader, self.accelerator.process_index)
        position = self._loader_position(path, rank)
        verify_checkpoint(path)
        try:
            self.accelerator.load_state(str(path))
        except (RuntimeError, KeyError, ValueError) as err:
            raise RunDirError(
                f"Checkpoint {path} does not fit this run's model and optimizer ({type(err).__name__}: "
                f"{str(err).splitlines()[0][:200]}). Resume with the settings that wrote it, or start a new run."
            ) from None
        if state.scheduler is not None:
            scheduler.load_state_dict(state.scheduler)
        loader.load_state_dict(position, str(self.run_dir.loader_state(path, rank)))
        self._restore_best(path)
        logger.info(f"Resumed from {path}: epoch {state.epoch}, step {state.global_step}")
        return state

    def _loader_position(self, checkpoint: Path, rank: int) -> dict[str, Any]:
        """Process `rank`'s training-loader position in `checkpoint` (written by _checkpoint, every kind of data)."""
        file = self.run_dir.loader_state(checkpoint, rank)
        if not file.is_file():
            raise RunDirError(
                f"Checkpoint {checkpoint} holds no training-data position for process {rank} ({file.name}): it was "
                "written by an older version of hf-transfer, which did not save it, or by fewer processes. Resume it "
                "with the version and the number of processes that wrote it, or start a new run."
            )
        try:
            return json.loads(file.read_text())
        except (ValueError, UnicodeDecodeError) as err:
            raise RunDirError(
                f"Checkpoint file {file} is not the JSON this tool writes ({err}): resume from another checkpoint, "
                "or start a new run."
            ) from None

    def _restore_best(self, checkpoint: Path) -> None:
        """The best weights as of `checkpoint`, whichever folder it came from: what the resumed run's metrics
        will describe (a later best of a crashed run is not)."""
        best = self.run_dir.best_weights
        if self.accelerator.is_main_process and (checkpoint / BEST_FILE).is_file():
            if not (best.is_file() and os.path.samefile(checkpoint / BEST_FILE, best)):
                with atomic_path(best) as tmp:
                    shutil.copyfile(checkpoint / BEST_FILE, tmp)
        self.accelerator.wait_for_everyone()

    # --------------------------------------------------------------------------------- helpers
    def _steps(self, s: TrainConfig, batches_per_epoch: int) -> _Steps:
        # The schedule counts this process's optimizer steps, so it is right for any number of processes.
        # accelerator.gradient_accumulation_steps: the config's value, or `accelerate config`'s when left at 1.
        steps_per_epoch = math.ceil(batches_per_epoch / self.accelerator.gradient_accumulation_steps)
        total_steps = s.max_steps or steps_per_epoch * s.epochs
        return _Steps(steps_per_epoch, total_steps, math.ceil(total_steps / steps_per_epoch))


def _position_rank(loader: TrainLoader, rank: int) -> int:
    """Whose position file a process writes and reads: the main process's when the position is shared."""
    return 0 if loader.shared_position else rank


def _check_resolved(s: TrainConfig) -> None:
    """What train() resolves before a fit (the strategy's learning rate, the batch size) is set."""
    if s.lr is None:
        raise ConfigError("The engine needs a learning rate: resolve train.lr before fit().")
    if s.batch_size is None:
        raise ConfigError("The engine needs a batch size: resolve train.batch_size before fit() (with_schedule).")


def _check_length(s: TrainConfig, loader: TrainLoader) -> None:
    """The fit has a length: the loader's epochs, or train.max_steps (a loader without a length: a stream)."""
    if loader.batches_per_epoch is None and not s.max_steps:
        raise ConfigError(
            "Training on a stream (data.streaming) needs train.max_steps, as a stream has no length: set it "
            "(a stage that counts epochs, such as lp_ft's probe, cannot stream)."
        )
    if s.epochs is None and s.max_steps is None:
        raise ConfigError("The engine needs epochs or max_steps: resolve train.epochs before fit().")


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Frozen parameters never reach the optimizer; biases and norm weights (1-d) get no decay."""
    decay, no_decay = [], []
    for param in model.parameters():
        if param.requires_grad:
            (no_decay if param.ndim <= 1 else decay).append(param)
    if not decay and not no_decay:
        raise ConfigError("No parameter is trainable: check the strategy and the model's head.")
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def check_launch(num_processes: int, device: torch.device, environ: Mapping[str, str] = os.environ) -> None:
    """Stop a launch of N processes that Accelerate set up as one: each process would then train the
    whole run alone, act as the main process and write the same output_dir. (On a machine without GPUs,
    `process_state` sets such a launch up over the CPUs; this stops what still gets through, e.g. a state
    that the caller's own code set up before the run.)"""
    name, launched = launched_processes(environ)
    if launched <= 1 or num_processes > 1:
        return
    if device.type == "cpu":
        fix = (
            f"on CPUs launch with `ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes {launched} "
            "-m hf_transfer train ...` (`accelerate launch --cpu` starts one process, whatever --num_processes says)"
        )
    else:
        fix = f"launch with `accelerate launch --multi_gpu --num_processes {launched} ...`, one process per GPU"
    raise LaunchError(
        f"This process is one of {launched} launched ({name}={launched}) but Accelerate set up a single process, "
        f"so each of them would train the whole run alone and write the same output_dir: {fix}."
    )


def lr_schedule(name: str, optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int) -> LambdaLR:
    """The learning rate per optimizer step (`train.scheduler`): constant, or a linear warm-up over `warmup_steps`
    then a linear or cosine decay to 0 at `total_steps`; the same numbers as transformers' `get_scheduler` for these
    names (whose `constant` has no warm-up either). Not imported from there: transformers.optimization imports the
    Trainer's utilities and with them peft, about a second before the first step of every run, for two formulas."""
    if name == "constant":
        return LambdaLR(optimizer, _constant)
    return LambdaLR(
        optimizer, partial(_warmup_then_decay, warmup=warmup_steps, total=total_steps, cosine=name == "cosine")
    )


def _constant(step: int) -> float:
    return 1.0


def _warmup_then_decay(step: int, *, warmup: int, total: int, cosine: bool) -> float:
    if step < warmup:
        return float(step) / float(max(1, warmup))
    if cosine:
        progress = float(step - warmup) / float(max(1, total - warmup))
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))
    return max(0.0, float(total - step) / float(max(1, total - warmup)))


# From this share of a fit's time on, the log names evaluation as what costs, with the settings that lower it.
EVALUATION_SHARE_ADVICE = 0.25


def time_split(runtime: float, evaluation: float, checkpoints: float, evaluations: int) -> str:
    """Where a fit's time went: training steps, evaluations, checkpoints."""
    steps = runtime - evaluation - checkpoints
    return (
        f"Training took {runtime:.1f} s: steps {steps:.1f} s, {evaluations} evaluation(s) {evaluation:.1f} s, "
        f"checkpoints {checkpoints:.1f} s"
    )


def evaluation_advice(
    runtime: float, evaluation: float, examples: int, steps_per_epoch: int, eval_every_steps: int | None
) -> str | None:
    """What to set when evaluating is a large share of a fit's time (None when it is not)."""
    if runtime <= 0 or evaluation < EVALUATION_SHARE_ADVICE * runtime:
        return None
    often = f"every {eval_every_steps} steps" if eval_every_steps else f"every epoch of {steps_per_epoch} steps"
    return (
        f"Evaluation took {100 * evaluation / runtime:.0f}% of the training time ({examples} validation examples "
        f"{often}): evaluate less often (train.eval_every_steps above {eval_every_steps or steps_per_epoch}) or on "
        "fewer examples (data.max_eval_samples)."
    )


def process_seconds() -> float:
    """Wall seconds since this process started: the interpreter's start, before any import."""
    return time.time() - psutil.Process().create_time()


def precision_in_effect(accelerator: Accelerator) -> str:
    """The mixed precision the run computes in: Accelerate's setting, except where Accelerate falls back to
    full precision without a word (fp16 on a CPU: no autocast, no gradient scaler; `native_amp` stays off).
    DeepSpeed and Megatron-LM apply the precision themselves."""
    asked = accelerator.mixed_precision
    engines = (DistributedType.DEEPSPEED, DistributedType.MEGATRON_LM)
    if asked == "no" or accelerator.native_amp or accelerator.distributed_type in engines:
        return asked
    return "no"


def _warn_if_collapsed(state: TrainState, num_labels: int, lr: float) -> None:
    """The first epoch ended with the training loss where it started: the model is not learning."""
    if len(state.train_loss) < 2:
        return
    first, last = state.train_loss[0][1], state.train_loss[-1][1]
    if last < first * 0.98:
        return
    chance = math.log(num_labels)
    near_chance = f" (about ln {num_labels} = {chance:.2f}: chance level)" if abs(last - chance) < 0.1 * chance else ""
    logging.getLogger(__package__).warning(
        "The training loss has not moved in the first epoch (%.4f -> %.4f%s): the model is not learning. "
        "Lower train.lr (now %g) by 10x, or raise train.warmup_ratio; with LoRA, check lora.target_modules.",
        first,
        last,
        near_chance,
        lr,
    )


def _link_or_copy(source: Path, target: Path) -> None:
    """A hard link (free, and the best file is replaced, never rewritten, so the link keeps its content)."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def _plain(state: dict[str, Any]) -> dict[str, Any]:
    """A scheduler state with only plain values (LambdaLR keeps None for its functions): JSON, no pickle."""
    return json.loads(json.dumps(state, default=lambda value: None))


def _unshare(weights: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], bool]:
    """safetensors refuses tensors that share memory (tied weights): copy the repeats. Also says whether
    there were any (then the file holds keys Accelerate's own save would drop)."""
    seen: set[int] = set()
    out = {}
    for key, tensor in weights.items():
        tensor = tensor.detach().contiguous()
        ptr = tensor.data_ptr()
        out[key] = tensor.clone() if ptr in seen else tensor
        seen.add(ptr)
    return out, len(seen) < len(out)
