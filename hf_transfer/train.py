"""`train(config)`: the whole run, from config to output_dir."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from accelerate.logging import get_logger
from accelerate.utils import set_seed
from datasets import Dataset
from torch import nn

from . import data as data_lib
from .adapters import ADAPTERS, TaskAdapter
from .artifacts import EVAL_DIR, save_model_artifact, save_run_files, write_json
from .card import write_model_card
from .config import RunConfig, to_dict
from .engine import Engine, FitResult
from .errors import ConfigError
from .evaluation import classification_report, predict_dataset
from .hub import push_run, require_token
from .samples import resolve_data, resolve_model
from .strategies import STRATEGIES, trainable_parameters

logger = get_logger(__name__)


@dataclass
class RunResult:
    output_dir: Path
    labels: list[str]
    metrics: dict[str, Any]
    fit: FitResult
    model: nn.Module
    adapter: TaskAdapter
    is_main_process: bool


def load_splits(config: RunConfig, adapter: TaskAdapter) -> tuple[Dataset, Dataset, list[str]]:
    """Train and validation sets with an integer `labels` column, and the class names."""
    d = config.data
    if not d.train:
        raise ConfigError("data.train is not set: point it at a class-folder directory, a data file or a Hub id.")
    path_column = adapter.input_column if adapter.input_is_file else None
    columns = {f"data.{adapter.input_column_key}": adapter.input_column, "data.label_column": d.label_column}

    def load(source: str) -> Dataset:
        dataset = data_lib.load_source(resolve_data(source), adapter.folder_builder, path_column)
        data_lib.require_columns(dataset, columns, source)
        # Before any split or subset, so that a bad row is reported by its position in the source.
        return adapter.prepare_dataset(dataset)

    train = load(d.train)
    labels = data_lib.resolve_labels(train, d.label_column)
    if len(labels) < 2:
        raise ConfigError(f"{d.train!r} has {len(labels)} class(es); classification needs at least 2.")
    train = data_lib.encode_labels(train, d.label_column, labels, d.train)
    if d.validation:
        validation = data_lib.encode_labels(load(d.validation), d.label_column, labels, d.validation)
    else:
        train, validation = data_lib.split_train(train, d.validation_split, config.train.seed)
    if d.max_train_samples:
        train = train.select(range(min(d.max_train_samples, len(train))))
    if d.max_eval_samples:
        validation = validation.select(range(min(d.max_eval_samples, len(validation))))
    return train, validation, labels


def train(config: RunConfig) -> RunResult:
    """Fine-tune `config.model` on `config.data` with `config.strategy`; write everything to output_dir."""
    if config.push_to_hub:
        require_token()  # fail now, not after hours of training
    strategy = STRATEGIES.get(config.strategy)
    adapter_cls = ADAPTERS.get(config.task)
    output_dir = Path(config.output_dir)
    set_seed(config.train.seed)
    engine = Engine(config.train, output_dir, num_workers=config.data.num_workers)
    acc = engine.accelerator

    adapter = adapter_cls(config)
    with acc.main_process_first():  # one process builds the datasets cache, the others read it
        train_set, eval_set, labels = load_splits(config, adapter)
    logger.info(f"{len(train_set)} training / {len(eval_set)} validation examples, {len(labels)} classes")

    model = strategy(adapter.build_model(labels), adapter, config)
    trainable, total = trainable_parameters(model)
    logger.info(f"{config.strategy}: {trainable:,} of {total:,} parameters train ({100 * trainable / total:.2f}%)")

    fit = engine.fit(model, adapter, train_set, eval_set, labels, tracker_config=_flat(to_dict(config)))

    model = engine.unwrap(model)
    metrics = {
        **fit.best_metrics,
        "best_epoch": fit.best_epoch,
        "global_step": fit.global_step,
        "train_runtime": fit.train_runtime,
        "train_samples_per_second": fit.train_samples_per_second,
        "trainable_parameters": trainable,
        "total_parameters": total,
        "history": fit.history,
    }
    if acc.is_main_process:
        save_model_artifact(
            model, adapter, labels, output_dir, base_model=resolve_model(config.model), merge=config.export.merge
        )
        save_run_files(config, labels, metrics, output_dir)
    # The best model's validation predictions, for the card's per-class table and confusion matrix:
    # the engine's own from the best epoch, or (best epoch before a resume) predicted again, each
    # process its shard, gather_for_metrics reassembling the set.
    predictions = fit.best_predictions
    if predictions is None:
        batch_size = config.train.eval_batch_size or config.train.batch_size
        predictions = predict_dataset(model, adapter, eval_set, batch_size, acc)
    validation = classification_report(predictions, labels)
    acc.wait_for_everyone()
    engine.close()  # flushes the tensorboard events that the card's curves read
    if acc.is_main_process:
        write_json(output_dir / EVAL_DIR / "best_model_validation.json", validation)
        write_model_card(output_dir, config, labels, metrics, validation)
        if config.push_to_hub:
            h = config.hub
            push_run(output_dir, h.repo_id, private=h.private, revision=h.revision, commit_message=h.commit_message)
    return RunResult(output_dir, labels, metrics, fit, model, adapter, acc.is_main_process)


def _flat(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Trackers (tensorboard hparams) take scalars only."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        elif isinstance(value, (int, float, str, bool)):
            out[prefix + key] = value
        else:
            out[prefix + key] = str(value)
    return out
