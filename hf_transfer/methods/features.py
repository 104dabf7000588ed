"""Cached-feature probing: a frozen backbone's output for an input never changes, so compute it once.

With the backbone frozen and the training view deterministic (no augmentation), every epoch of a
linear probe would push the same images through the same backbone again. Here the backbone runs
once over the training and validation sets (sharded across processes, gathered in order); its
features are kept on disk under a key made of everything they depend on (the frozen weights, the
cut, the preprocessing, the data), and the head trains on them: many epochs in seconds. The head's
parameters are the model's own, so the model saved afterwards is the same kind of artifact as an
uncached run's: backbone plus trained head, opening in timm / pipeline() as usual.

Augmentation without paying for it every epoch: the training set's features can be kept for K views
of each example (`linear_probe.views`: the evaluation view, its mirror image, mild crops, audio
windows; the adapter says which, `probe_views`), one backbone pass per view, paid once and cached
under a key that names the view's recipe. Each epoch then trains on one of an example's views, drawn
as a function of (seed, epoch, index) like every augmentation here, so a resumed run and any number
of workers see the same draws. The validation features are the evaluation view's alone.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.utils.data import Dataset as TorchDataset

from ..catalog.weights import safetensors_problem
from ..core.atomic import atomic_path
from ..core.cache import cache_dir, fingerprint, tensors_fingerprint
from ..core.rng import view_of
from ..data.internals import dataset_fingerprint
from ..data.pipeline import ProbeViewExamples, decode_once
from ..engine.loop import FitData

if TYPE_CHECKING:
    from datasets import Dataset

    from ..adapters.base import FeatureSplit, InputCodec, ProbeView, TaskAdapter
    from ..engine.loop import Engine

logger = logging.getLogger(__name__)

# The seed of the probe views' random parts (crops, windows): fixed, not the run's, so that runs with
# other seeds share the cached views (the run's seed decides which view each epoch draws).
VIEW_SEED = 0


class FeatureView(TorchDataset):
    """Cached features and their labels as a map-style dataset (a batch is one tensor index).

    Features of shape [examples, views, ...] hold several views of each example: each epoch an example
    is one of them, `view_of(seed, epoch, index)`. The epoch lives in shared memory, so persistent
    DataLoader workers see `set_epoch` (Accelerate calls it on the dataset every epoch)."""

    def __init__(self, features: torch.Tensor, labels: torch.Tensor, seed: int = 0, views: bool = False) -> None:
        self.features, self.labels, self.seed, self.views = features, labels, seed, views
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()

    def __len__(self) -> int:
        return len(self.labels)

    def set_epoch(self, epoch: int) -> None:
        self._epoch.fill_(epoch)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {key: value[0] for key, value in self.__getitems__([index]).items()}

    def __getitems__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        index = torch.as_tensor(indices)
        if not self.views:
            return {"features": self.features[index], "labels": self.labels[index]}
        epoch, count = int(self._epoch), self.features.shape[1]
        drawn = torch.tensor([view_of(self.seed, epoch, int(i), count) for i in indices], dtype=torch.long)
        return {"features": self.features[index, drawn], "labels": self.labels[index]}


def collate_features(batch: Any) -> dict[str, torch.Tensor]:
    if isinstance(batch, dict):  # already gathered by FeatureView.__getitems__
        return batch
    return {key: torch.stack([example[key] for example in batch]) for key in batch[0]}


def head_logits(head: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    return head(batch["features"])


@dataclass(frozen=True)
class FeatureJob:
    """What computes a frozen backbone's features and keeps them: the model and its adapter, the engine that
    runs it (sharded across processes, gathered in order), the batch size, and the cache folder (None:
    the default, see core.cache)."""

    model: nn.Module
    adapter: TaskAdapter
    engine: Engine
    batch_size: int
    cache_root: str | None = None


@dataclass(frozen=True)
class _Cut:
    """Where the model was cut before its head, and the fingerprint of every weight before the cut: what
    the features depend on besides the data."""

    split: FeatureSplit
    weights: str


@dataclass
class BackboneFeatures:
    """A frozen backbone's features of some data sets, and the head module they feed."""

    head: nn.Module
    features: dict[str, torch.Tensor]  # data set name -> [examples, ...] as the head receives them
    seconds: float  # spent computing them; 0 when every one came from the cache
    split: FeatureSplit  # where the model was cut
    weights: str  # the backbone's fingerprint (see backbone_fingerprint)


def backbone_features(
    job: FeatureJob, datasets: dict[str, Dataset], origins: dict[str, str | None] | None = None
) -> BackboneFeatures | None:
    """What the model's head receives for every example of each data set (evaluation view, no
    augmentation), from the cache or computed now (sharded across processes, gathered in order) and
    then cached; None when the adapter cannot cut this model before its head (the log says why).
    `datasets` maps a name (for the log, e.g. "training") to a data set; `origins` the same names to where
    its rows come from (see Splits.origins), for the error on a row that cannot be decoded."""
    model, adapter, engine = job.model, job.adapter, job.engine
    split = adapter.models.feature_split(model)
    if split is None:
        logger.info("%s: the head is not one module fed one tensor, so features are not cached", type(model).__name__)
        return None
    model.to(engine.device).eval()
    if not _one_vector_per_example(split, adapter.inputs, next(iter(datasets.values())), engine):
        logger.info(
            "%s: the head's input depends on the input length, so features are not cached", type(model).__name__
        )
        return None
    cut = _Cut(split, backbone_fingerprint(model, adapter.models.head_modules(model)))
    features, seconds = {}, 0.0
    for what, dataset in datasets.items():
        features[what], spent = _features(job, cut, dataset, what, (origins or {}).get(what))
        seconds += spent
    return BackboneFeatures(head=split.head, features=features, seconds=seconds, split=split, weights=cut.weights)


@dataclass
class CachedProbe:
    """The head to train, what it trains on (training features [examples, views, ...]: view 0 is the
    evaluation view), the views' names, and the seconds spent getting the features (0 when cached)."""

    head: nn.Module
    data: FitData
    feature_seconds: float
    views: list[str]

    @property
    def train_features(self) -> torch.Tensor:
        return self.data.train.features

    @property
    def train_labels(self) -> torch.Tensor:
        return self.data.train.labels


def cached_probe(
    job: FeatureJob,
    train_set: Dataset,
    eval_set: Dataset,
    origins: tuple[str | None, str | None] = (None, None),
    views: int | None = 1,
    seed: int = 0,
) -> CachedProbe | None:
    """Features of both splits (from the cache, or computed now): the validation set's evaluation view,
    up to `views` views of each training example (None: the adapter's default; see InputCodec.probe_views),
    each epoch drawing one under `seed`; and the head to train on them. None when the adapter cannot cut
    this model (the probe then trains uncached). `origins`: where each split's rows come from (see
    Splits.origins), for the error on a row that cannot be decoded."""
    sets = {"training": train_set, "validation": eval_set}
    named = dict(zip(sets, origins, strict=True))
    found = backbone_features(job, sets, named)
    if found is None:
        logger.info("The probe trains uncached")
        return None
    chosen = job.adapter.inputs.probe_views(views)
    train, seconds, cut = [found.features["training"]], found.seconds, _Cut(found.split, found.weights)
    for position, view in enumerate(chosen[1:], start=1):
        what, at = f"training ({view.name})", (position, view)
        features, spent = _features(job, cut, train_set, what, origins[0], view=at)
        train.append(features)
        seconds += spent
    stacked = torch.stack(train, dim=1)  # [examples, views, ...]
    data = probe_data(stacked, train_set, found.features["validation"], eval_set, seed)
    names = [view.name for view in chosen]
    if views is not None and views > len(chosen):
        logger.info("linear_probe.views=%d: this task has %d probe view(s): %s", views, len(chosen), ", ".join(names))
    logger.info(
        "The head trains on cached backbone features (%s per example; %d view(s) of each training example: %s, "
        "one drawn per example each epoch)",
        tuple(stacked.shape[2:]),
        len(chosen),
        ", ".join(names),
    )
    return CachedProbe(head=found.head, data=data, feature_seconds=seconds, views=names)


def probe_data(
    train: torch.Tensor, train_set: Dataset, evaluation: torch.Tensor, eval_set: Dataset, seed: int = 0
) -> FitData:
    """What the engine fits a head on: the features of both splits with their data sets' labels.
    `train` [examples, ...], or [examples, views, ...] with views drawn per epoch under `seed`."""
    views = train.dim() == evaluation.dim() + 1
    return FitData(
        train=FeatureView(train, torch.tensor(train_set["labels"]), seed, views),
        eval=FeatureView(evaluation, torch.tensor(eval_set["labels"])),
        collate=collate_features,
        logits=head_logits,
    )


def _one_vector_per_example(split: FeatureSplit, inputs: InputCodec, dataset: Dataset, engine: Engine) -> bool:
    """Whether the head is fed one fixed-size vector per example (BERT's pooled output, timm's pre-logits)
    rather than, say, a padded sequence (RoBERTa's head picks the first token itself): tried on two rows."""
    batch = inputs.model_inputs(dataset[:2])
    batch = {k: v.to(engine.device) for k, v in batch.items() if k != "labels"}
    with torch.no_grad():
        out = split.features(batch)
    return out.dim() == 2 or all(size == 1 for size in out.shape[2:])


def backbone_fingerprint(model: nn.Module, heads: list[str]) -> str:
    """A hash of every tensor outside the head: the weights the features depend on."""
    inside = lambda key: any(key == h or key.startswith(h + ".") for h in heads)  # noqa: E731
    return tensors_fingerprint({k: v for k, v in model.state_dict().items() if not inside(k)})


def _features(
    job: FeatureJob,
    cut: _Cut,
    dataset: Dataset,
    what: str,
    origin: str | None = None,
    view: tuple[int, ProbeView] | None = None,
) -> tuple[torch.Tensor, float]:
    """The features of `dataset` (its evaluation view, or the probe `view` at its position in the list of
    views, whose random parts are seeded by (VIEW_SEED, position, index)) and the seconds spent computing
    them (0 when read from the cache)."""
    inputs, engine, cache_root = job.adapter.inputs, job.engine, job.cache_root
    position, seen = view or (0, None)
    augment_source = seen is not None and seen.augment_source
    parts = [
        "features-v1",
        cut.split.name,
        cut.weights,
        inputs.decode_signature(augment_source),
        dataset_fingerprint(dataset),
    ]
    if seen is not None:
        parts += [seen.name, seen.recipe, position, VIEW_SEED]
    key = fingerprint(*parts)
    path = cache_dir("features", cache_root) / f"{key}.safetensors"
    problem = safetensors_problem(path) if path.is_file() else None
    if problem:  # the cache is ours: a damaged entry (a disk that filled up) is computed again
        logger.warning("Cached features %scomputing them again", problem)
    elif path.is_file():
        features = load_file(str(path))["features"]
        if len(features) == len(dataset):
            logger.info("Cached %s features: %s", what, path)
            return features, 0.0
    start = time.perf_counter()
    with engine.main_process_first():  # one process decodes into the input cache, the others read it
        decoded, is_decoded = decode_once(dataset, inputs, augment=augment_source, cache_root=cache_root, origin=origin)
    examples = ProbeViewExamples(decoded, inputs, seen, VIEW_SEED, decoded=is_decoded, origin=origin)
    examples.set_epoch(position)  # the view's position plays the epoch's part in its examples' seeds
    logger.info("Computing %s features once (%d examples) -> %s", what, len(examples), path)
    features = engine.gather(cut.split.features, examples, inputs.collate, job.batch_size)
    if engine.is_main_process:
        with atomic_path(path) as tmp:  # a reader never sees half a file
            save_file({"features": features.contiguous()}, str(tmp))
    engine.wait_for_everyone()
    return features, time.perf_counter() - start
