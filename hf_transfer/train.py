"""`train(config)`: the whole run, from config to output_dir."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, get_args

import torch
from accelerate.logging import get_logger
from accelerate.utils import set_seed
from datasets import Dataset, DatasetDict, IterableDataset
from torch import nn

from .adapters import ADAPTERS, InputCodec, TaskAdapter
from .artifacts.card import card_facts, portable_base, write_model_card
from .artifacts.hub import push_run, require_token
from .artifacts.model import save_model_artifact, save_run_files, write_json
from .config.schema import MixedPrecision, RunConfig, TrainConfig
from .core.errors import ConfigError, RunDirError
from .core.log import default_logging
from .core.rundir import RunDir
from .data.defaults import apply_defaults, with_output_dir, with_schedule
from .data.files import one_listing_per_folder
from .data.loaders import LoaderFactory, MapLoader
from .data.pipeline import ExampleView, check_decodable, decode_once
from .data.sources import check_output_outside_data
from .data.splits import load_splits
from .data.streaming import StreamLoader, StreamReading, load_stream_splits, training_stream
from .engine.checkpoints import checkpoint_identity
from .engine.distributed import process_state
from .engine.evaluation import Predictions, classification_report, learned_nothing
from .engine.loop import Engine, FitData, FitPlan, FitResult, check_launch
from .methods import layer_decay
from .methods.features import CachedProbe, FeatureJob, cached_probe
from .methods.probe_search import ProbeSet, SearchPoint, SearchResult, search_regularisation, search_summary
from .methods.strategies import Stage, augments, freezes_norm_statistics, learning_rate, stages, trainable_parameters

if TYPE_CHECKING:
    from accelerate import PartialState

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
        model (`nn.Module`): the trained model with the best weights, unwrapped (a PeftModel for LoRA); under
            FSDP a plain copy on the main process, the sharded model on the others.
        adapter (`TaskAdapter`): the adapter that built it, ready for `adapter.inputs.model_inputs(...)`.
        is_main_process (`bool`): whether this process is the one that wrote the files.
    """

    output_dir: Path
    labels: list[str]
    metrics: dict[str, Any]
    fit: FitResult
    model: nn.Module
    adapter: TaskAdapter
    is_main_process: bool


@dataclass
class Prepared:
    """What several runs on the same task, data and model can share (see compare.py): the config with
    what was resolved against the data (task, model, columns), the adapter with its preprocessing, the
    loaded splits, and the model built for their labels with the random state right after building it
    (so a run from a copy starts exactly as a run that built it itself)."""

    config: RunConfig
    adapter: TaskAdapter
    train_set: Dataset
    eval_set: Dataset
    labels: list[str]
    model: nn.Module
    rng_state: torch.Tensor
    origins: tuple[str | None, str | None] = (None, None)  # see Splits.origins
    streamed: bool = False  # train_set is a stream (data.streaming): decided once, by _load


@one_listing_per_folder()
def prepare(config: RunConfig, data: Dataset | DatasetDict | None = None) -> Prepared:
    """Load the data and build the model once, as `train` would (same seed, same defaults)."""
    set_seed(config.train.seed)
    with _processes().main_process_first():
        config = apply_defaults(config, data)
        adapter = ADAPTERS.get(config.task)(config)
        splits = load_splits(config, adapter.inputs, data)
    model = adapter.models.build_model(splits.labels)
    rng = torch.get_rng_state()
    return Prepared(splits.config, adapter, splits.train, splits.validation, splits.labels, model, rng, splits.origins)


def _processes() -> PartialState:
    """The processes' state before the engine exists, set up as the Accelerator will (over the CPUs for N
    processes without GPUs) and checked before N processes each read the data as if alone."""
    state = process_state()
    check_launch(state.num_processes, state.device)
    return state


@one_listing_per_folder()
def train(config: RunConfig, data: Dataset | DatasetDict | None = None, prepared: Prepared | None = None) -> RunResult:
    """Fine-tune `config.model` on `config.data` with `config.strategy` and write the run to `config.output_dir`.

    Works the same in one process and under `accelerate launch` (each process calls it). The folder
    must not hold another run unless `config.overwrite` (or resuming with `train.resume_from_checkpoint`).
    A task, model or output_dir left unset is chosen from the data (see `hf_transfer.defaults`), and logged.

    Args:
        config (`RunConfig`): the run's settings, e.g. `load_config(["task.yaml", "recipe.yaml"], ["train.epochs=3"])`.
        data (`Dataset | DatasetDict`, *optional*): the training data as an object instead of `data.train`:
            a Dataset (validation data: `data.validation`, or a held-out part) or a DatasetDict (its
            `train` split, and its validation split unless `data.validation` is set). config.yaml and the
            model card name it by its fingerprint.
        prepared (`Prepared`, *optional*): data and model already loaded for this config (by `prepare`); the
            model is trained in place, so pass a copy to keep the original.

    Returns:
        `RunResult`: metrics, labels, the trained model and its adapter.

    Raises:
        `HFTransferError` subclasses, each with one sentence naming the problem and the fix: `ConfigError`
        (settings), `DataError` (data), `ModelError` (model spec), `RunDirError` (output_dir or checkpoint
        belongs to another run), `TrainingDiverged` (NaN/inf loss), `HubError` (push).
    """
    default_logging()  # progress on stderr unless the application configured logging itself
    if config.push_to_hub:
        require_token()  # fail now, not after hours of training
    set_seed(config.train.seed)
    # What the defaults resolve to is recorded in config.yaml, so the run says exactly what it did.
    config = resolved(config)
    if config.output_dir is None and prepared is None:  # named after the data and the model: both known first
        with _processes().main_process_first():  # one process reads (or downloads) the data to infer the task
            config = apply_defaults(config, data)
    config = with_output_dir(config, data)
    check_output_outside_data(config.output_dir, config.data.train, config.data.validation)  # nothing written yet
    run_dir = RunDir(config.output_dir)  # the run's one RunDir: the engine and the writers of its files get it
    engine = Engine(config.train, run_dir, num_workers=config.data.num_workers)
    # Only the main process checks and locks the folder; every process then stops or goes on together.
    problem = (
        run_dir.claim(bool(config.train.resume_from_checkpoint), config.overwrite) if engine.is_main_process else None
    )
    problem = engine.broadcast(problem)
    if problem:
        engine.close()
        raise RunDirError(problem)
    succeeded = False
    try:
        if prepared is None:
            with engine.main_process_first():  # one process reads (or downloads) the data to infer the task
                config = apply_defaults(config, data)
        result = _run(config, engine, data, prepared)
        succeeded = True
        return result
    finally:
        run_dir.release(succeeded)  # a run that failed leaving nothing puts back the run it replaced
        engine.close()


@dataclass
class StageFit:
    """One stage's training (see strategies.Stage), the seconds its cached features took (None: uncached),
    the cached probe's views and its regularisation search (None: not searched)."""

    stage: Stage
    fit: FitResult
    feature_seconds: float | None
    views: list[str] | None = None
    search: SearchResult | None = None


@dataclass(frozen=True)
class RunData:
    """The run's training and validation splits, where their rows come from (see Splits.origins), and whether
    the training split is a stream (as _load read it): what `training_data` reads it with."""

    train: Dataset | IterableDataset
    eval: Dataset
    origins: tuple[str | None, str | None] = (None, None)
    streamed: bool = False


@dataclass(frozen=True)
class RunPlan:
    """Everything the run's fits need, prepared before the first of them (see `_plan`): the config as resolved
    against the data and the training set's size, the adapter, the model as built, the data, the labels, and
    the stages as data. Each stage becomes one `FitPlan` for the engine, which never calls back here."""

    config: RunConfig
    adapter: TaskAdapter
    model: nn.Module  # as built: each stage applies its strategy to what the stage before it left
    data: RunData
    labels: list[str]
    # In order, as they run: the one a resume continues carries train.resume_from_checkpoint, the others none.
    stages: tuple[Stage, ...]
    first: int  # the stage a resume continues (0 without one): the stages before it are in its checkpoint
    frozen: frozenset[str]  # the parameters the adapter froze on purpose: no stage trains them
    tracker_config: dict[str, Any]  # the config, flat (trackers take scalars only)
    schedule: str | None  # what was chosen from the training set's size (None: all set; defaults.with_schedule)


def _run(config: RunConfig, engine: Engine, data: Dataset | DatasetDict | None, prepared: Prepared | None) -> RunResult:
    plan = _plan(with_setup(config, engine), engine, data, prepared)
    model, done = _fit_stages(plan, engine)
    return _finish(plan, engine, model, done)


def _plan(config: RunConfig, engine: Engine, data: Dataset | DatasetDict | None, prepared: Prepared | None) -> RunPlan:
    """The run's plan: the data loaded and the model built (or taken from `prepared`), the schedule chosen
    from the training set's size, the stages of the strategy."""
    if prepared is None:
        prepared = _load(config, engine, data)
        # From here on the config names the columns found in the data (and an in-memory source): config.yaml,
        # the card and the checkpoints' run identity say what the run read.
        config = prepared.config
    else:
        torch.set_rng_state(prepared.rng_state)  # as if this run had built the model itself
    adapter, model, train_set = prepared.adapter, prepared.model, prepared.train_set
    streamed = prepared.streamed
    logger.info(
        f"{'a stream of' if streamed else len(train_set)} training / {len(prepared.eval_set)} validation examples, "
        f"{len(prepared.labels)} classes"
    )
    # train.batch_size and train.epochs left auto are chosen from the training set's size (config.yaml records them).
    config, schedule = with_schedule(config, None if streamed else len(train_set), engine.num_processes)
    if config.train.gradient_checkpointing:
        adapter.models.enable_gradient_checkpointing(model)
    frozen = frozenset(name for name, p in model.named_parameters() if not p.requires_grad)  # the adapter's choice
    planned = stages(config)
    if engine.sharded:
        _check_sharded_plan(planned, config)
    resume = config.train.resume_from_checkpoint
    first = _resumed_stage(planned, engine.run_dir, resume)
    as_run = tuple(
        replace(stage, train=replace(stage.train, resume_from_checkpoint=resume if index == first else None))
        for index, stage in enumerate(planned)
    )
    run_data = RunData(train_set, prepared.eval_set, prepared.origins, streamed)
    return RunPlan(
        config, adapter, model, run_data, prepared.labels, as_run, first, frozen, _flat(asdict(config)), schedule
    )


def _load(config: RunConfig, engine: Engine, data: Dataset | DatasetDict | None) -> Prepared:
    """The splits loaded (or streamed) and the model built for their labels."""
    adapter = ADAPTERS.get(config.task)(config)
    streamed = config.data.streaming  # the one place that chooses how the training data is read
    load = load_stream_splits if streamed else load_splits
    with engine.main_process_first():  # one process builds the datasets cache, the others read it
        splits = load(config, adapter.inputs, data)
    model = adapter.models.build_model(splits.labels)
    rng = torch.get_rng_state()
    return Prepared(
        splits.config, adapter, splits.train, splits.validation, splits.labels, model, rng, splits.origins, streamed
    )


def _fit_stages(plan: RunPlan, engine: Engine) -> tuple[nn.Module, list[StageFit]]:
    """Each stage's strategy applied in turn, and the stages from the resumed one on trained: the trained
    model (unwrapped) and the stages' fits."""
    model, done = plan.model, []
    for index, stage in enumerate(plan.stages):
        if index:  # a new stage starts from everything the adapter left trainable
            for name, param in model.named_parameters():
                param.requires_grad_(name not in plan.frozen)
        model = stage.strategy(model, plan.adapter.models, plan.config)
        if index < plan.first:
            continue  # its result is in the checkpoint the next stage resumes from
        earlier = _records(done[-1]) if done else []  # after a resume: in the checkpoint instead
        done.append(_fit_stage(plan, stage, model, engine, earlier))
    return engine.unwrap(model), done


def _finish(plan: RunPlan, engine: Engine, model: nn.Module, done: list[StageFit]) -> RunResult:
    """The run's metrics and validation report from its stages' fits, its files written (main process)."""
    fit = done[-1].fit
    # Under FSDP the trained model stays sharded: the main process saves a plain copy of its best weights.
    whole = fit.unsharded_model if fit.unsharded_model is not None else model
    metrics = _metrics(model, done, len(plan.stages))
    config = plan.config
    search = metrics.get("probe_search")
    if search is not None:
        # config.yaml records the choice: run again from it, the probe trains with it (no search needed).
        config = replace(config, linear_probe=replace(config.linear_probe, weight_decay=search["weight_decay"]))
    validation = classification_report(_best_predictions(plan, engine, model, done[-1]), plan.labels)
    # A run that learned nothing still ends; it says so in the log, metrics.json and the card.
    warning = learned_nothing(validation)
    metrics["warnings"] = [warning] if warning else []
    if warning:
        logger.warning(warning)
    _write_run(replace(plan, config=config), engine, whole, metrics, validation, done[-1])
    output_dir = Path(config.output_dir)
    return RunResult(output_dir, plan.labels, metrics, fit, whole, plan.adapter, engine.is_main_process)


def _metrics(model: nn.Module, done: list[StageFit], stage_count: int) -> dict[str, Any]:
    """What metrics.json holds (before the validation report's warnings), over every stage of the run."""
    fit = done[-1].fit
    trainable, total = trainable_parameters(model)
    records = _records(done[-1])  # every stage, those run before a resume included
    metrics = {
        **fit.best_metrics,
        "best_epoch": fit.best_epoch,
        "global_step": fit.step_offset + fit.global_step,  # across the run's stages
        "train_runtime": sum(r["train_runtime"] for r in records),
        # A cached probe's backbone pass (0 when the features came from the cache); not in train_runtime.
        "feature_runtime": next((r["feature_runtime"] for r in records if r["feature_runtime"] is not None), None),
        "train_samples_per_second": fit.train_samples_per_second,
        # Per process, as trained: train.auto_find_batch_size may have halved the batch and doubled accumulation.
        "batch_size": fit.batch_size,
        "gradient_accumulation_steps": fit.gradient_accumulation_steps,
        "trainable_parameters": trainable,
        "total_parameters": total,
        "history": [h for r in records for h in r["history"]],
    }
    if stage_count > 1:
        metrics["stages"] = [r["summary"] for r in records]
    search = next((r["probe_search"] for r in records if r.get("probe_search")), None)
    if search is not None:
        metrics["probe_search"] = search
    return metrics


def _best_predictions(plan: RunPlan, engine: Engine, model: nn.Module, last: StageFit) -> Predictions:
    """The best model's validation predictions, for the card's per-class table and confusion matrix: the
    engine's own from the best epoch, or (best epoch before a resume) predicted again, each process its
    shard, gather_for_metrics reassembling the set."""
    if last.fit.best_predictions is not None:
        return last.fit.best_predictions
    adapter, data = plan.adapter, plan.data
    view = ExampleView(data.eval, adapter.inputs, augment=False, decoded=False, origin=data.origins[1])
    batch_size = last.stage.train.eval_batch_size or last.fit.batch_size
    return engine.predict(model, adapter.models.logits, view, adapter.inputs.collate, batch_size)


def _write_run(
    plan: RunPlan,
    engine: Engine,
    whole: nn.Module,
    metrics: dict[str, Any],
    validation: dict[str, Any],
    last: StageFit,
) -> None:
    """The run's files (main process): the model, config.yaml, metrics.json, run_info.json, the validation
    report and the card (after the model: peft writes a README.md of its own with the adapter); then the push
    to the Hub when asked."""
    config, adapter, labels = plan.config, plan.adapter, plan.labels
    run_dir = engine.run_dir
    setup = engine.trained_setup(last.fit)
    if engine.is_main_process:
        records, augmentation = _records(last), _augmentation(adapter, last)
        facts = replace(
            card_facts(config, adapter.card, whole, labels),
            augmentation=augmentation,
            lr=last.stage.train.lr,
            train_loss=[point for r in records for point in r["train_loss"]],
            setup=setup,
            probe_search=next((r["probe_search_text"] for r in records if r.get("probe_search_text")), None),
            schedule=plan.schedule,
        )
        base = portable_base(config)
        artifacts = save_model_artifact(whole, adapter.models, labels, run_dir, base, merge=config.export.merge)
        save_run_files(config, labels, metrics, run_dir, artifacts, setup)
    engine.wait_for_everyone()
    if not engine.is_main_process:
        return
    # Then the main process, which computed the card's facts above, writes the report and the card.
    write_json(run_dir.eval_report("best_model_validation"), validation)
    write_model_card(run_dir, config, labels, metrics, validation, facts)
    if config.push_to_hub:
        h = config.hub
        push_run(run_dir, h.repo_id, private=h.private, revision=h.revision, commit_message=h.commit_message)


def _fit_stage(
    plan: RunPlan, stage: Stage, model: nn.Module, engine: Engine, earlier: list[dict[str, Any]]
) -> StageFit:
    """Train one stage: on cached features when the backbone is frozen and the views deterministic, else on
    the decoded examples (with layer-wise learning rates when asked). `earlier`: the records of the stages
    before it (see `_stage_record`); its checkpoints carry them, and its steps count on from theirs."""
    config, adapter, settings = plan.config, plan.adapter, stage.train
    trainable, total = trainable_parameters(model)
    logger.info(
        f"Stage {stage.name!r}: {stage.strategy.description}: {trainable:,} of {total:,} parameters train "
        f"({100 * trainable / total:.2f}%); augmentation: {adapter.inputs.augmentation(stage.augment)}"
    )
    probe = _cached_probe(plan, stage, model, engine)
    views = probe.views if probe is not None else None
    identity = {**run_identity(config, cached=probe is not None), "stage": stage.name, "probe_views": views}
    step_offset = earlier[-1]["end_step"] if earlier else 0
    fit_plan = FitPlan(settings, identity, plan.tracker_config, None, step_offset, tuple(earlier))
    if probe is not None:
        settings, search = _probe_regularisation(config, settings, probe, engine)
        fit = engine.fit(probe.head, probe.data, plan.labels, replace(fit_plan, settings=settings))
        return StageFit(stage, fit, probe.feature_seconds, views, search)
    if not stage.strategy.trains_backbone and config.linear_probe.weight_decay is not None:
        settings = replace(settings, weight_decay=config.linear_probe.weight_decay)
    data = training_data(config, adapter, plan.data, engine, stage.augment)
    groups = None
    if settings.layer_decay is not None and stage.strategy.trains_backbone:
        layers = adapter.models.layer_ids(model)
        groups = layer_decay.param_groups(model, layers, settings.lr, settings.weight_decay, settings.layer_decay)
    fit = engine.fit(model, data, plan.labels, replace(fit_plan, settings=settings, param_groups=groups))
    return StageFit(stage, fit, None)


def _cached_probe(plan: RunPlan, stage: Stage, model: nn.Module, engine: Engine) -> CachedProbe | None:
    """The stage's head and the backbone's features, when it trains the head alone on deterministic views
    (linear_probe.cache_features); None otherwise (said in the log when caching was asked)."""
    config = plan.config
    if stage.strategy.trains_backbone or not config.linear_probe.cache_features:
        return None
    if plan.data.streamed:
        logger.info("Features are not cached: the training data is a stream (data.streaming)")
        return None
    if stage.augment:
        logger.info("Features are not cached: data.augment is on, so every epoch sees new views")
        return None
    batch_size = stage.train.eval_batch_size or stage.train.batch_size
    count, cache, data = config.linear_probe.views, config.data.cache_dir, plan.data
    job = FeatureJob(model, plan.adapter, engine, batch_size, cache)
    return cached_probe(job, data.train, data.eval, data.origins, count, stage.train.seed)


def _probe_regularisation(
    config: RunConfig, settings: TrainConfig, probe: CachedProbe, engine: Engine
) -> tuple[TrainConfig, SearchResult | None]:
    """The cached probe's settings with its weight decay: linear_probe.weight_decay when set, else the
    search's choice on the training features (computed by the main process, taken by every process), else
    train.weight_decay (search off, or too few examples to fold)."""
    lp = config.linear_probe
    if lp.weight_decay is not None:
        return replace(settings, weight_decay=lp.weight_decay), None
    if not lp.search:
        return settings, None
    if len(lp.search_weight_decay) == 1:  # a grid of one: that value, nothing to compare it with
        return replace(settings, weight_decay=lp.search_weight_decay[0]), None
    result = None
    if engine.is_main_process:
        grid = [SearchPoint(weight_decay, settings.lr) for weight_decay in lp.search_weight_decay]
        # Examples per optimizer step over every process, as the engine trains.
        batch = settings.batch_size * engine.num_processes * engine.accelerator.gradient_accumulation_steps
        with torch.random.fork_rng(devices=[]):  # the run's random stream goes on as without a search
            data = ProbeSet(probe.train_features, probe.train_labels)
            result = search_regularisation(probe.head, data, grid, lp.search_folds, settings, batch)
        if result is not None:
            logger.info(f"Probe regularisation ({result.seconds:.1f} s): {result.describe()}")
    result = engine.broadcast(result)
    return (settings if result is None else replace(settings, weight_decay=result.chosen.weight_decay)), result


def _augmentation(adapter: TaskAdapter, done: StageFit) -> str:
    """What the last stage trained on, in words: the adapter's augmentation, or a cached probe's views."""
    if done.views is not None and len(done.views) > 1:
        return (
            f"cached features of {len(done.views)} views of each training example ({', '.join(done.views)}), "
            "one drawn per example each epoch"
        )
    return adapter.inputs.augmentation(done.stage.augment)


def _check_sharded_plan(plan: list[Stage], config: RunConfig) -> None:
    """Under FSDP a run trains the whole model in one stage: a strategy applied to an already sharded model
    (LP-FT's second stage), or a head trained alone on cached features, would be sharded on its own."""
    if len(plan) > 1:
        raise ConfigError(
            f"strategy={config.strategy} runs {len(plan)} stages, which FSDP does not support here: use full or lora "
            "under FSDP, or launch LP-FT with DDP (configs/accelerate/ddp.yaml)."
        )
    stage = plan[0]
    if not stage.strategy.trains_backbone and config.linear_probe.cache_features and not stage.augment:
        raise ConfigError(
            "A linear probe on cached features trains the head alone, which FSDP would shard by itself: set "
            "linear_probe.cache_features=false, or launch the probe with DDP (configs/accelerate/ddp.yaml)."
        )


def _resumed_stage(plan: list[Stage], run_dir: RunDir, resume: str | None) -> int:
    """The stage a resume continues: the one its checkpoint was written in (0 without a resume)."""
    if not resume or len(plan) == 1:
        return 0
    path = run_dir.latest_checkpoint() if resume == "latest" else Path(resume)
    stage = checkpoint_identity(path).get("stage") if path is not None else None
    names = [s.name for s in plan]
    return names.index(stage) if stage in names else 0


def _stage_summary(done: StageFit) -> dict[str, Any]:
    s = done.stage.train
    return {
        "stage": done.stage.name,
        "strategy": done.stage.strategy.name,
        "epochs": s.epochs,
        "lr": s.lr,
        "best_epoch": done.fit.best_epoch,
        **{f"best_{k}": v for k, v in done.fit.best_metrics.items()},
    }


def _stage_record(done: StageFit) -> dict[str, Any]:
    """What the run reports of one finished stage, in plain values (the later stages' checkpoints keep it):
    its summary, its evaluations and training loss on the run's step axis (each stage counts its steps
    from 0), its runtimes, and the run-wide step it ended at."""
    fit = done.fit
    return {
        "summary": _stage_summary(done),
        "history": [{**h, "stage": done.stage.name} for h in fit.history],
        "train_loss": [[fit.step_offset + step, loss] for step, loss in fit.train_loss],
        "train_runtime": fit.train_runtime,
        "feature_runtime": done.feature_seconds,
        "end_step": fit.step_offset + fit.global_step,
        # A cached probe's regularisation search (metrics.json, config.yaml's choice and the card's line).
        "probe_search": search_summary(done.search) if done.search is not None else None,
        "probe_search_text": done.search.describe() if done.search is not None else None,
    }


def _records(last: StageFit) -> list[dict[str, Any]]:
    """The records of every stage up to `last`, in order: the earlier ones as its fit carried them."""
    return [*last.fit.earlier_stages, _stage_record(last)]


def with_setup(config: RunConfig, engine: Engine) -> RunConfig:
    """`config` with what the engine resolved: data workers, and the mixed precision and gradient
    accumulation in effect (`accelerate config` or launch flags choose them when the config does not)."""
    setup = engine.setup
    precision = setup.mixed_precision if setup.mixed_precision in get_args(MixedPrecision) else None
    train = replace(
        config.train,
        mixed_precision=precision or config.train.mixed_precision,
        gradient_accumulation_steps=setup.gradient_accumulation_steps,
    )
    return replace(config, train=train, data=replace(config.data, num_workers=engine.loader_settings.num_workers))


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
    """`config` with the strategy-dependent defaults filled in: the learning rate, augmentation and whether the
    normalisation statistics stay frozen."""
    data = replace(config.data, augment=augments(config))
    train = replace(config.train, lr=learning_rate(config), freeze_norm_statistics=freezes_norm_statistics(config))
    return replace(config, data=data, train=train)


def training_data(config: RunConfig, adapter: TaskAdapter, data: RunData, engine: Engine, augment: bool) -> FitData:
    """Both splits decoded once (cached), as per-example views: augmented for training when asked. A
    training stream is decoded and augmented as it is read, each process reading its own part. The training
    loader (map-style or a stream, see data/loaders.py) is chosen here, by how _load read the data. A row
    that cannot be decoded is named by its number in its origin (see Splits.origins)."""
    d, origins = config.data, data.origins
    training = _stream_training if data.streamed else _map_training
    inputs = adapter.inputs
    with engine.main_process_first():  # one process fills the decoded-input cache, the others read it
        train, loader = training(config, inputs, data, engine, augment)
        eval_rows, eval_decoded = decode_once(data.eval, inputs, False, d.decode_cache, d.cache_dir, origin=origins[1])
    if not eval_decoded:
        check_decodable(data.eval, inputs, origins[1])  # a broken validation file, found now, not after an epoch
    return FitData(
        train=train,
        eval=ExampleView(eval_rows, inputs, False, decoded=eval_decoded, origin=origins[1]),
        collate=inputs.collate,
        logits=adapter.models.logits,
        loader=loader,
    )


def _map_training(
    config: RunConfig, inputs: InputCodec, data: RunData, engine: Engine, augment: bool
) -> tuple[ExampleView, LoaderFactory]:
    """The training split decoded once, as per-example views, read epoch after epoch."""
    d, origin = config.data, data.origins[0]
    rows, decoded = decode_once(data.train, inputs, augment, d.decode_cache, d.cache_dir, origin=origin)
    return ExampleView(rows, inputs, augment, config.train.seed, decoded=decoded, origin=origin), MapLoader


def _stream_training(
    config: RunConfig, inputs: InputCodec, data: RunData, engine: Engine, augment: bool
) -> tuple[IterableDataset, LoaderFactory]:
    """This process's part of the training stream, decoded and augmented as it is read, until train.max_steps."""
    rank, processes = engine.accelerator.process_index, engine.num_processes
    reading = StreamReading(config.train.seed, config.data.shuffle_buffer, rank, processes)
    return training_stream(data.train, inputs, augment, reading, data.origins[0]), StreamLoader


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
