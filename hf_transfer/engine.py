"""The fine-tuning loop, shared by every adapter: Accelerate end to end.

The engine knows the adapter contract and nn.Module, nothing else. It prepares the model and data,
trains with accumulation / clipping / mixed precision, evaluates each epoch through
gather_for_metrics, keeps the best weights, checkpoints with save_state and resumes mid-epoch.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.state import AcceleratorState
from accelerate.tracking import get_available_trackers
from accelerate.utils import DataLoaderConfiguration, ProjectConfiguration
from safetensors.torch import load_file, save_file
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import get_scheduler

from .adapters.base import TaskAdapter
from .config import TrainConfig
from .errors import ConfigError
from .evaluation import Predictions, gather_logits, summary_metrics
from .rng import AugmentationRng, RngState
from .strategies import set_train_mode

logger = get_logger(__name__)

CHECKPOINTS = "checkpoints"
BEST_WEIGHTS = "best/model.safetensors"
STATE_FILE = "trainer_state.json"


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
    history: list[dict[str, Any]] = field(default_factory=list)
    augment_rng: RngState | None = None  # see rng.py


@dataclass
class FitResult:
    best_metrics: dict[str, float]
    best_epoch: int | None
    history: list[dict[str, Any]]
    global_step: int
    train_runtime: float
    train_samples_per_second: float
    # Validation logits of the best epoch; None when that epoch ran before a resume.
    best_predictions: Predictions | None = None


class Engine:
    def __init__(self, settings: TrainConfig, output_dir: str | Path, num_workers: int = 0) -> None:
        self.settings = settings
        self.num_workers = num_workers
        self.output_dir = Path(output_dir)
        available = {str(t) for t in get_available_trackers()}
        missing = [t for t in settings.log_with if t != "all" and t not in available]
        if missing:  # Accelerate drops them silently; say so once
            logging.getLogger(__name__).warning(
                "Trackers %s are not installed and will not log (installed: %s)", missing, sorted(available)
            )
        self.accelerator = Accelerator(
            mixed_precision=settings.mixed_precision,  # None: from `accelerate config` / launch flags
            gradient_accumulation_steps=settings.gradient_accumulation_steps,
            log_with=settings.log_with or None,
            project_config=ProjectConfiguration(
                project_dir=str(self.output_dir), logging_dir=str(self.output_dir / "logs")
            ),
            # Seeded, epoch-dependent shuffling: a resumed run sees the same order as an uninterrupted one.
            dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=settings.seed),
        )

    # ------------------------------------------------------------------------------------ public
    def fit(
        self,
        model: nn.Module,
        adapter: TaskAdapter,
        train_data: Any,
        eval_data: Any,
        labels: list[str],
        tracker_config: dict[str, Any] | None = None,
    ) -> FitResult:
        s, acc = self.settings, self.accelerator
        augment_rng = AugmentationRng(s.seed + acc.process_index)  # ranks augment differently
        train_data = train_data.with_transform(augment_rng.wrap(lambda batch: adapter.preprocess(batch, train=True)))
        eval_data = eval_data.with_transform(lambda batch: adapter.preprocess(batch, train=False))
        train_dl = self._loader(train_data, adapter, s.batch_size, shuffle=True)
        eval_dl = self._loader(eval_data, adapter, s.eval_batch_size or s.batch_size, shuffle=False)
        optimizer = torch.optim.AdamW(self._param_groups(model), lr=s.lr)
        model, optimizer, train_dl, eval_dl = acc.prepare(model, optimizer, train_dl, eval_dl)
        if len(train_dl) == 0:
            raise ConfigError(
                f"{len(train_data)} training examples do not fill one batch of {s.batch_size} on each of "
                f"{acc.num_processes} process(es): lower train.batch_size or add data."
            )

        # The schedule counts this process's optimizer steps, so it is right for any number of processes.
        # acc.gradient_accumulation_steps: the config's value, or `accelerate config`'s when left at 1.
        steps_per_epoch = math.ceil(len(train_dl) / acc.gradient_accumulation_steps)
        total_steps = s.max_steps or steps_per_epoch * s.epochs
        epochs = math.ceil(total_steps / steps_per_epoch)
        scheduler = get_scheduler(
            s.scheduler, optimizer, num_warmup_steps=int(s.warmup_ratio * total_steps), num_training_steps=total_steps
        )
        acc.register_for_checkpointing(scheduler)

        state = TrainState(labels=list(labels))
        if s.resume_from_checkpoint:
            state = self._resume(s.resume_from_checkpoint, labels)
            if state.augment_rng is not None:
                augment_rng.resume(state.augment_rng)
        acc.init_trackers("hf_transfer", config=tracker_config)

        logger.info(
            f"Training {epochs} epochs, {total_steps} optimizer steps; {acc.num_processes} process(es) x "
            f"batch {s.batch_size} x accumulation {acc.gradient_accumulation_steps}"
        )
        progress = tqdm(
            total=total_steps,
            initial=state.global_step,
            desc="train",
            disable=not (acc.is_local_main_process and s.progress_bar),
        )
        start, samples = time.perf_counter(), 0
        best_predictions: Predictions | None = None  # kept only for evaluations made in this process run
        stop = state.global_step >= total_steps
        while state.epoch < epochs and not stop:
            train_dl.set_epoch(state.epoch)
            batches = acc.skip_first_batches(train_dl, state.batches_in_epoch) if state.batches_in_epoch else train_dl
            set_train_mode(model)
            for batch in batches:
                with acc.accumulate(model):
                    targets = batch.pop("labels")
                    logits = adapter.logits(model, batch)
                    loss = F.cross_entropy(logits.float(), targets, label_smoothing=s.label_smoothing)
                    acc.backward(loss)
                    if acc.sync_gradients and s.max_grad_norm is not None:
                        acc.clip_grad_norm_(model.parameters(), s.max_grad_norm)
                    optimizer.step()
                    optimizer.zero_grad()
                state.batches_in_epoch += 1
                samples += targets.shape[0] * acc.num_processes
                if not acc.sync_gradients:
                    continue
                scheduler.step()
                state.global_step += 1
                progress.update(1)
                progress.set_postfix(loss=f"{loss.item():.4f}", epoch=state.epoch)
                acc.log({"train/loss": loss.item(), "train/lr": scheduler.get_last_lr()[0]}, step=state.global_step)
                if state.global_step >= total_steps:
                    stop = True
                    break
                if s.checkpoint_every_steps and state.global_step % s.checkpoint_every_steps == 0:
                    # The loader has fetched (and augmented) the next batch already unless the epoch is done.
                    state.augment_rng = augment_rng.checkpoint(state.batches_in_epoch < len(train_dl))
                    self._save_checkpoint(state)

            predictions = gather_logits(model, adapter, eval_dl, acc)
            metrics = summary_metrics(predictions, len(labels))
            improved = self._record(state, metrics, model)
            if improved:
                best_predictions = predictions
            acc.log({f"eval/{k}": v for k, v in metrics.items()}, step=state.global_step)
            shown = " ".join(f"{k}={v:.4f}" for k, v in metrics.items())
            logger.info(f"epoch {state.epoch}: {shown}" + (" (best)" if improved else ""))
            state.epoch, state.batches_in_epoch = state.epoch + 1, 0
            patience = s.early_stopping_patience
            if patience is not None and state.evals_without_improvement >= patience:
                logger.info(f"Early stopping: {patience} evaluations without improvement")
                stop = True
            state.augment_rng = augment_rng.checkpoint(batch_prefetched=False)
            self._save_checkpoint(state)
        progress.close()
        runtime = time.perf_counter() - start

        self._load_best(model)
        return FitResult(
            best_metrics=state.best_metrics,
            best_predictions=best_predictions,
            best_epoch=state.best_epoch,
            history=state.history,
            global_step=state.global_step,
            train_runtime=runtime,
            train_samples_per_second=samples / runtime if runtime > 0 else 0.0,
        )

    def close(self) -> None:
        """Flush the trackers. The process group stays up, so one process can run several trainings
        (chained transfer); Accelerate's global state is reset so the next run may choose another
        mixed precision (it refuses to change it otherwise)."""
        for tracker in self.accelerator.trackers:
            tracker.finish()
        AcceleratorState._reset_state()

    def unwrap(self, model: nn.Module) -> nn.Module:
        return self.accelerator.unwrap_model(model)

    # ----------------------------------------------------------------------------------- helpers
    def _loader(self, data: Any, adapter: TaskAdapter, batch_size: int, shuffle: bool) -> DataLoader:
        return DataLoader(
            data,
            batch_size=batch_size,
            shuffle=shuffle,
            collate_fn=adapter.collate,
            num_workers=self.num_workers,
            # As timm's train.py: a ragged last training batch (possibly of 1) would break BatchNorm.
            drop_last=shuffle,
            # A private generator: starting an epoch's iterator then draws nothing from the global RNG
            # (dropout's), which a resumed run would otherwise see shifted.
            generator=torch.Generator().manual_seed(self.settings.seed),
        )

    def _param_groups(self, model: nn.Module) -> list[dict[str, Any]]:
        """Frozen parameters never reach the optimizer; biases and norm weights (1-d) get no decay."""
        decay, no_decay = [], []
        for param in model.parameters():
            if param.requires_grad:
                (no_decay if param.ndim <= 1 else decay).append(param)
        if not decay and not no_decay:
            raise ConfigError("No parameter is trainable: check the strategy and the model's head.")
        return [
            {"params": decay, "weight_decay": self.settings.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]

    def _record(self, state: TrainState, metrics: dict[str, float], model: nn.Module) -> bool:
        key = self.settings.metric_for_best_model
        value = metrics[key]
        state.history.append({"epoch": state.epoch, "step": state.global_step, **metrics})
        better = state.best_value is None or (value < state.best_value if key == "loss" else value > state.best_value)
        if better:
            state.best_value, state.best_epoch, state.best_metrics = value, state.epoch, dict(metrics)
            state.evals_without_improvement = 0
            self._save_best(model)
        else:
            state.evals_without_improvement += 1
        return better

    def _save_best(self, model: nn.Module) -> None:
        weights = self.accelerator.get_state_dict(model)  # collective under FSDP/DeepSpeed: every rank calls it
        if self.accelerator.is_main_process:
            path = self.output_dir / CHECKPOINTS / BEST_WEIGHTS
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            save_file(_unshare(weights), str(tmp))
            os.replace(tmp, path)  # atomic: a crash leaves the previous best intact
        self.accelerator.wait_for_everyone()

    def _load_best(self, model: nn.Module) -> None:
        path = self.output_dir / CHECKPOINTS / BEST_WEIGHTS
        self.accelerator.wait_for_everyone()
        if path.is_file():
            self.unwrap(model).load_state_dict(load_file(str(path)))

    def _save_checkpoint(self, state: TrainState) -> None:
        acc = self.accelerator
        root = self.output_dir / CHECKPOINTS
        final = root / f"step_{state.global_step:07d}"
        tmp = root / f"{final.name}.tmp"
        acc.save_state(str(tmp))
        if acc.is_main_process:
            (tmp / STATE_FILE).write_text(json.dumps(asdict(state), indent=2))
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)  # a checkpoint folder exists only once complete
            for old in sorted(root.glob("step_*[0-9]"))[: -self.settings.save_total_limit]:
                shutil.rmtree(old)
        acc.wait_for_everyone()

    def _resume(self, where: str, labels: list[str]) -> TrainState:
        path = latest_checkpoint(self.output_dir) if where == "latest" else Path(where)
        if path is None or not (path / STATE_FILE).is_file():
            raise ConfigError(
                f"No checkpoint to resume from at {where!r}"
                + (f" (looked in {self.output_dir / CHECKPOINTS})" if where == "latest" else "")
            )
        state = TrainState(**json.loads((path / STATE_FILE).read_text()))
        if state.labels != list(labels):
            raise ConfigError(
                f"Checkpoint {path} was trained on labels {state.labels}, but this run's data has {list(labels)}. "
                "Resume with the same data, or start a new run (e.g. with this run's output_dir as `model:`)."
            )
        self.accelerator.load_state(str(path))
        logger.info(f"Resumed from {path}: epoch {state.epoch}, step {state.global_step}")
        return state


def latest_checkpoint(output_dir: Path) -> Path | None:
    found = sorted((Path(output_dir) / CHECKPOINTS).glob("step_*[0-9]"))
    return found[-1] if found else None


def _unshare(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """safetensors refuses tensors that share memory (tied weights): copy the repeats."""
    seen: set[int] = set()
    out = {}
    for key, tensor in weights.items():
        tensor = tensor.detach().contiguous()
        ptr = tensor.data_ptr()
        out[key] = tensor.clone() if ptr in seen else tensor
        seen.add(ptr)
    return out
