"""`train(config)`: the whole run, from config to output_dir."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from accelerate.logging import get_logger
from accelerate.utils import set_seed
from datasets import Dataset, DatasetDict
from torch import nn

from . import data as data_lib
from .adapters import ADAPTERS, TaskAdapter
from .artifacts import save_model_artifact, save_run_files, write_json
from .card import CardFacts, write_model_card
from .config import RunConfig, to_dict
from .datapipe import ExampleView, check_decodable, decode_once
from .defaults import apply_defaults
from .engine import Engine, FitData, FitResult
from .errors import RunDirError
from .evaluation import classification_report
from .features import cached_probe
from .hub import push_run, require_token
from .rundir import RunDir
from .specs import resolve_model
from .strategies import STRATEGIES, augments, learning_rate, trainable_parameters

logger = get_logger(__name__)


@dataclass
class RunResult:
    """What `train` returns (on every process; only the main one wrote the files).

    Attributes:
        output_dir (`Path`): the run folder (see `RunDir` for its layout).
        labels (`list[str]`): class names, in the order of the model's outputs.
        metrics (`dict`): what metrics.json holds: the best validation `accuracy`, `f1_macro`, `loss`,
            `best_epoch`, runtimes, parameter counts and the per-evaluation `history`.
        fit (`FitResult`): the engine's account of the training.
        model (`nn.Module`): the trained model with the best weights, unwrapped (a PeftModel for LoRA).
        adapter (`TaskAdapter`): the adapter that built it, ready for `adapter.model_inputs(...)`.
        is_main_process (`bool`): whether this process is the one that wrote the files.
    """

    output_dir: Path
    labels: list[str]
    metrics: dict[str, Any]
    fit: FitResult
    model: nn.Module
    adapter: TaskAdapter
    is_main_process: bool


def train(config: RunConfig, data: Dataset | DatasetDict | None = None) -> RunResult:
    """Fine-tune `config.model` on `config.data` with `config.strategy` and write the run to `config.output_dir`.

    Works the same in one process and under `accelerate launch` (each process calls it). The folder
    must not hold another run unless `config.overwrite` (or resuming with `train.resume_from_checkpoint`).
    A task or model left unset is chosen from the data (see `hf_transfer.defaults`), and logged.

    Args:
        config (`RunConfig`): the run's settings, e.g. `load_config(["task.yaml", "recipe.yaml"], ["train.epochs=3"])`.
        data (`Dataset | DatasetDict`, *optional*): the training data as an object instead of `data.train`:
            a Dataset (validation data: `data.validation`, or a held-out part) or a DatasetDict (its
            `train` split, and its validation split unless `data.validation` is set). config.yaml and the
            model card name it by its fingerprint.

    Returns:
        `RunResult`: metrics, labels, the trained model and its adapter.

    Raises:
        `HFTransferError` subclasses, each with one sentence naming the problem and the fix: `ConfigError`
        (settings), `DataError` (data), `ModelError` (model spec), `RunDirError` (output_dir or checkpoint
        belongs to another run), `TrainingDiverged` (NaN/inf loss), `HubError` (push).
    """
    if config.push_to_hub:
        require_token()  # fail now, not after hours of training
    set_seed(config.train.seed)
    # What the defaults resolve to is recorded in config.yaml, so the run says exactly what it did.
    config = resolved(config)
    engine = Engine(config.train, config.output_dir, num_workers=config.data.num_workers)
    config = replace(config, data=replace(config.data, num_workers=engine.loader_settings.num_workers))
    run_dir = RunDir(config.output_dir)
    # Only the main process checks and locks the folder; every process then stops or goes on together.
    problem = (
        run_dir.claim(bool(config.train.resume_from_checkpoint), config.overwrite) if engine.is_main_process else None
    )
    problem = engine.broadcast(problem)
    if problem:
        engine.close()
        raise RunDirError(problem)
    try:
        with engine.main_process_first():  # one process reads (or downloads) the data to infer the task
            config = apply_defaults(config, data)
        return _run(config, engine, data)
    finally:
        run_dir.release()
        engine.close()


def _run(config: RunConfig, engine: Engine, data: Dataset | DatasetDict | None) -> RunResult:
    strategy = STRATEGIES.get(config.strategy)
    adapter = ADAPTERS.get(config.task)(config)
    output_dir = Path(config.output_dir)
    with engine.main_process_first():  # one process builds the datasets cache, the others read it
        splits = data_lib.load_splits(config, adapter, data)
    # From here on the config names the columns found in the data (and an in-memory source): config.yaml,
    # the card and the checkpoints' run identity say what the run read.
    config, train_set, eval_set, labels = splits.config, splits.train, splits.validation, splits.labels
    logger.info(f"{len(train_set)} training / {len(eval_set)} validation examples, {len(labels)} classes")

    model = adapter.build_model(labels)
    if config.train.gradient_checkpointing:
        adapter.enable_gradient_checkpointing(model)
    model = strategy(model, adapter, config)
    trainable, total = trainable_parameters(model)
    logger.info(f"{strategy.description}: {trainable:,} of {total:,} parameters train ({100 * trainable / total:.2f}%)")
    logger.info(f"Augmentation: {adapter.augmentation(config.data.augment)}")

    tracker_config = _flat(to_dict(config))
    probe = None
    if not strategy.trains_backbone and config.linear_probe.cache_features:
        if config.data.augment:
            logger.info("Features are not cached: data.augment is on, so every epoch sees new views")
        else:
            batch_size = config.train.eval_batch_size or config.train.batch_size
            probe = cached_probe(model, adapter, train_set, eval_set, engine, batch_size, config.data.cache_dir)
    identity = run_identity(config, cached=probe is not None)
    if probe is not None:
        fit = engine.fit(probe.head, probe.data, labels, tracker_config, identity)
    else:
        fit_data = training_data(config, adapter, train_set, eval_set, engine)
        fit = engine.fit(model, fit_data, labels, tracker_config, identity)

    model = engine.unwrap(model)
    metrics = {
        **fit.best_metrics,
        "best_epoch": fit.best_epoch,
        "global_step": fit.global_step,
        "train_runtime": fit.train_runtime,
        # A cached probe's backbone pass (0 when the features came from the cache); not in train_runtime.
        "feature_runtime": probe.feature_seconds if probe is not None else None,
        "train_samples_per_second": fit.train_samples_per_second,
        "trainable_parameters": trainable,
        "total_parameters": total,
        "history": fit.history,
    }
    if engine.is_main_process:
        base_model = resolve_model(config.model)
        artifacts = save_model_artifact(model, adapter, labels, output_dir, base_model, merge=config.export.merge)
        save_run_files(config, labels, metrics, output_dir, artifacts)
    # The best model's validation predictions, for the card's per-class table and confusion matrix:
    # the engine's own from the best epoch, or (best epoch before a resume) predicted again, each
    # process its shard, gather_for_metrics reassembling the set.
    predictions = fit.best_predictions
    if predictions is None:
        view = ExampleView(eval_set, adapter, augment=False, decoded=False)
        predictions = engine.predict(model, adapter.logits, view, adapter.collate)
    validation = classification_report(predictions, labels)
    engine.wait_for_everyone()
    if engine.is_main_process:
        write_json(RunDir(output_dir).eval_report("best_model_validation"), validation)
        facts = CardFacts(augmentation=adapter.augmentation(config.data.augment), train_loss=fit.train_loss)
        write_model_card(output_dir, config, labels, metrics, validation, facts)
        if config.push_to_hub:
            h = config.hub
            push_run(output_dir, h.repo_id, private=h.private, revision=h.revision, commit_message=h.commit_message)
    return RunResult(output_dir, labels, metrics, fit, model, adapter, engine.is_main_process)


def run_identity(config: RunConfig, cached: bool) -> dict[str, Any]:
    """What makes a run this run, for its checkpoints: a resume must match it (the engine adds the labels).
    Optimisation settings (epochs, lr, ...) are not in it: a resume may change them."""
    lora = config.lora
    return {
        "task": config.task,
        "model": config.model,
        "weights": config.weights,
        "pretrained": config.pretrained,
        "strategy": config.strategy,
        "cached_features": cached,
        "lora": [lora.r, lora.alpha, lora.target_modules] if config.strategy == "lora" else None,
        "data.train": config.data.train,
        "data.validation": config.data.validation,
        "data.image_size": config.data.image_size,
        "seed": config.train.seed,
    }


def resolved(config: RunConfig) -> RunConfig:
    """`config` with the strategy-dependent defaults filled in: the learning rate and augmentation."""
    data = replace(config.data, augment=augments(config))
    return replace(config, data=data, train=replace(config.train, lr=learning_rate(config)))


def training_data(
    config: RunConfig, adapter: TaskAdapter, train_set: Dataset, eval_set: Dataset, engine: Engine
) -> FitData:
    """Both splits decoded once (cached), as per-example views: augmented for training when asked."""
    d = config.data
    with engine.main_process_first():  # one process fills the decoded-input cache, the others read it
        train_rows, train_decoded = decode_once(train_set, adapter, d.augment, d.decode_cache, d.cache_dir)
        eval_rows, eval_decoded = decode_once(eval_set, adapter, False, d.decode_cache, d.cache_dir)
    if not eval_decoded:
        check_decodable(eval_set, adapter)  # a broken validation file, found now rather than after an epoch
    return FitData(
        train=ExampleView(train_rows, adapter, d.augment, config.train.seed, decoded=train_decoded),
        eval=ExampleView(eval_rows, adapter, False, decoded=eval_decoded),
        collate=adapter.collate,
        logits=adapter.logits,
    )


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
