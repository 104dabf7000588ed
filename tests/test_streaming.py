"""Streaming training data (data.streaming): trained by max_steps from >= 4 shards, each process reading
its own, shuffled per pass, resumed exactly, labels known up front."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from conftest import as_overrides, failure_lines, tiny_image_overrides
from datasets import ClassLabel, Dataset, Features, Value
from datasets import Image as ImageFeature
from PIL import Image
from safetensors.torch import load_file

from hf_transfer import load_config, train
from hf_transfer.adapters import ADAPTERS
from hf_transfer.core.errors import ConfigError, DataError
from hf_transfer.data.streaming import StreamExamples, load_stream_splits

COLOURS = ["red", "green", "blue"]


@pytest.fixture(autouse=True)
def _short_pause_after_a_shuffled_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    """datasets gives pyarrow's reader threads 5 s to shut down after each shuffled pass; these files are tiny."""
    monkeypatch.setattr(datasets.config, "SLEEP_TIME_ON_THREADS_SHUTDOWN", 0.2)


def colour_rows(count: int, seed: int) -> dict[str, list]:
    """Learnable toy images: the class is the dominant colour channel; `id` names each example."""
    rng = np.random.default_rng(seed)
    rows: dict[str, list] = {"image": [], "label": [], "id": []}
    for i in range(count):
        pixels = rng.integers(0, 90, size=(24, 24, 3), dtype=np.uint8)
        pixels[..., i % 3] = rng.integers(160, 255, size=(24, 24), dtype=np.uint8)
        rows["image"].append(Image.fromarray(pixels))
        rows["label"].append(i % 3)
        rows["id"].append(f"{seed}-{i}")
    return rows


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """96 training images in 4 parquet shards (the Hub's file names) and 18 validation images beside them."""
    root = tmp_path_factory.mktemp("stream")
    features = Features({"image": ImageFeature(), "label": ClassLabel(names=COLOURS), "id": Value("string")})
    train_set = Dataset.from_dict(colour_rows(96, seed=0), features=features)
    for k in range(4):
        train_set.shard(4, k, contiguous=True).to_parquet(str(root / f"train-{k:05d}-of-00004.parquet"))
    Dataset.from_dict(colour_rows(18, seed=1), features=features).to_parquet(str(root / "validation-00000.parquet"))
    return root


def settings(data: Path, output_dir: Path, **extra: object) -> list[str]:
    """The suite's tiny image run, streamed, with its augmentation (crops, flips) back on."""
    stream = {"data.streaming": True, "data.crop_scale": "[0.7, 1.0]", "data.hflip": 0.5, "train.max_steps": 12}
    return tiny_image_overrides(data, "null", output_dir, **{**stream, **extra})


def _ids(stream) -> list[str]:
    return [example["id"] for example in stream]


def test_streamed_run_trains_by_max_steps_and_checkpoints_its_position(shards, tmp_path):
    """12 steps of 8 = one pass over the 4 shards, augmented, evaluated on the folder's validation split."""
    result = train(load_config(None, settings(shards, tmp_path / "run", **{"train.checkpoint_every_steps": 5})))
    assert result.metrics["global_step"] == 12
    assert result.metrics["accuracy"] > 0.5  # 3 colours, chance 1/3
    saved = load_config(tmp_path / "run" / "config.yaml")
    assert saved.data.streaming and saved.data.label_column == "label"
    state = json.loads((tmp_path / "run" / "checkpoints" / "step_0000010" / "loader_state_0.json").read_text())
    assert state["processes"] == 1 and state["epoch"] == 0


def test_each_process_reads_its_own_shards_and_each_pass_is_reshuffled(shards):
    """split_dataset_by_node over 4 shards and 2 processes: disjoint halves that together are the stream;
    the shuffle buffer gives every pass (set_epoch) another order."""
    config = load_config(None, settings(shards, "unused"))
    adapter = ADAPTERS.get(config.task)(config)
    labelled = load_stream_splits(config, adapter.inputs).train
    parts = [_ids(training_stream_ids(labelled, rank, 2, buffer=0)) for rank in (0, 1)]
    assert len(parts[0]) == len(parts[1]) == 48
    assert not set(parts[0]) & set(parts[1])
    assert set(parts[0]) | set(parts[1]) == {f"0-{i}" for i in range(96)}

    shuffled = training_stream_ids(labelled, 0, 1, buffer=16)
    first = _ids(shuffled)
    shuffled.set_epoch(1)
    second = _ids(shuffled)
    assert sorted(first) == sorted(second) == sorted(f"0-{i}" for i in range(96))
    assert first != second and first != sorted(first, key=lambda i: int(i.split("-")[1]))


def training_stream_ids(labelled, rank: int, processes: int, buffer: int):
    """The stream one process reads, before the adapter's map (which keeps only model inputs)."""
    from datasets.distributed import split_dataset_by_node

    stream = labelled.shuffle(seed=0, buffer_size=buffer) if buffer else labelled
    return split_dataset_by_node(stream, rank=rank, world_size=processes).select_columns(["id"])


def test_stream_examples_are_augmented_per_pass_and_place(shards):
    """The stream's map: model inputs and labels only, each crop seeded by (seed, pass, place in the
    stream, worker and process mixed in): the same again gives the same pixels, any other pass or place not."""
    config = load_config(None, settings(shards, "unused"))
    adapter = ADAPTERS.get(config.task)(config)
    splits = load_stream_splits(config, adapter.inputs)
    adapter.models.build_model(splits.labels)  # sets the image preprocessing
    rows = next(iter(splits.train.iter(batch_size=4)))
    examples = StreamExamples(adapter.inputs, augment=True, seed=0, rank=0, processes=1)
    examples.stream = splits.train  # whose epoch is the pass

    def pixels(indices: list[int], function: StreamExamples = examples) -> torch.Tensor:
        out = function(rows, indices)
        assert set(out) == {"pixel_values", "labels"} and out["labels"] == rows["labels"]
        return torch.stack(out["pixel_values"])

    first = pixels([0, 1, 2, 3])
    assert torch.equal(first, pixels([0, 1, 2, 3]))
    assert not torch.equal(first, pixels([4, 5, 6, 7]))
    other_rank = StreamExamples(adapter.inputs, augment=True, seed=0, rank=1, processes=2)
    other_rank.stream = splits.train
    assert not torch.equal(first, pixels([0, 1, 2, 3], other_rank))
    splits.train.set_epoch(1)
    assert not torch.equal(first, pixels([0, 1, 2, 3]))


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_mid_pass_equals_uninterrupted(shards, tmp_path, workers):
    """20 steps cross a pass (12 batches); resumed from step 7 (pass 0) and step 14 (pass 1), with
    augmentation and dropout on, the run ends where the uninterrupted one ended. No shuffle buffer:
    datasets does not save its content."""
    common = {
        "train.max_steps": 20,
        "train.checkpoint_every_steps": 7,
        "train.save_total_limit": 5,
        "data.shuffle_buffer": 0,
        "data.num_workers": workers,
    }
    full = train(load_config(None, settings(shards, tmp_path / "full", **common)))
    for step in (7, 14):
        checkpoint = tmp_path / "full" / "checkpoints" / f"step_{step:07d}"
        extra = {**common, "train.resume_from_checkpoint": str(checkpoint)}
        resumed = train(load_config(None, settings(shards, tmp_path / f"from_{step}", **extra)))
        assert resumed.metrics["global_step"] == 20
        assert resumed.metrics["loss"] == pytest.approx(full.metrics["loss"], abs=1e-6)
        a, b = full.model.state_dict(), resumed.model.state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a), f"weights differ after resuming from step {step}"


def test_every_checkpoint_holds_the_streams_position_and_a_resume_from_it_is_exact(shards, tmp_path):
    """Issue 19's one loader protocol, streamed: each checkpoint holds the stream loader's position
    (loader_state_0.json: the pass, datasets' place in it); 12 batches a pass, so step 7 is in pass 0 and
    steps 14 and 20 in pass 1. Resumed from step 7 (no shuffle buffer), the run ends bit-identical."""
    common = {"train.max_steps": 20, "train.checkpoint_every_steps": 7, "data.shuffle_buffer": 0}
    common["train.save_total_limit"] = 5
    full = train(load_config(None, settings(shards, tmp_path / "full", **common)))
    checkpoints = sorted((tmp_path / "full" / "checkpoints").glob("step_*"))
    assert [path.name for path in checkpoints] == ["step_0000007", "step_0000014", "step_0000020"]
    positions = [json.loads((path / "loader_state_0.json").read_text()) for path in checkpoints]
    assert [(p["kind"], p["processes"], p["epoch"]) for p in positions] == [("stream", 1, 0), *[("stream", 1, 1)] * 2]
    assert all(p["loader"] for p in positions)  # torchdata's state of the loader, with datasets' place in the stream
    extra = {**common, "train.resume_from_checkpoint": str(checkpoints[0])}
    resumed = train(load_config(None, settings(shards, tmp_path / "resumed", **extra)))
    assert resumed.metrics["global_step"] == 20
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_jsonl_shards_with_file_paths_need_the_labels_up_front(tmp_path):
    """jsonl shards name image files (relative to each shard) and string labels: a stream cannot list its
    classes without reading all of it, so data.labels names them (and their order)."""
    images = tmp_path / "images"
    images.mkdir()
    (tmp_path / "data").mkdir()
    rows = colour_rows(48, seed=2)
    lines = []
    for i, (image, label) in enumerate(zip(rows["image"], rows["label"], strict=True)):
        image.save(images / f"{i}.png")
        lines.append(json.dumps({"image": f"../images/{i}.png", "label": COLOURS[label]}))
    for k in range(4):
        (tmp_path / "data" / f"train-{k}.jsonl").write_text("\n".join(lines[k * 12 : (k + 1) * 12]) + "\n")
    validation = tmp_path / "data" / "validation.jsonl"
    validation.write_text("\n".join(lines[:9]) + "\n")
    base = {"data.validation": str(validation), "train.max_steps": 4}
    with pytest.raises(DataError, match=r"not a ClassLabel.*set data.labels="):
        train(load_config(None, settings(tmp_path / "data", tmp_path / "no-labels", **base)))
    labels = {**base, "data.labels": "[blue,green,red]"}
    result = train(load_config(None, settings(tmp_path / "data", tmp_path / "run", **labels)))
    assert result.labels == ["blue", "green", "red"] and result.metrics["global_step"] == 4
    # The map-style path takes the setting too (there it only fixes the classes and their order).
    loaded = train(
        load_config(None, settings(tmp_path / "data", tmp_path / "loaded", **labels, **{"data.streaming": False}))
    )
    assert loaded.labels == ["blue", "green", "red"]


def test_streamed_folders_take_their_classes_from_their_sub_folders(tmp_path):
    """An image (audio) folder streamed: its classes are its sub-folder names, known before reading, as in a
    loaded run: no data.labels needed."""
    from conftest import write_color_images

    from hf_transfer.catalog.samples import TONE_CLASSES, write_note_folders
    from hf_transfer.catalog.specs import write_tiny_wav2vec2

    for split, seed in (("train", 0), ("validation", 1)):
        write_color_images(tmp_path / "photos" / split, per_class=4, seed=seed, modes=False)
    result = train(load_config(None, settings(tmp_path / "photos", tmp_path / "run", **{"train.max_steps": 2})))
    assert result.labels == COLOURS[::-1] and result.metrics["global_step"] == 2  # blue, green, red

    notes = {"low": TONE_CLASSES["A3"], "high": TONE_CLASSES["C5"]}
    for split, seed in (("train", 0), ("validation", 1)):
        write_note_folders(tmp_path / "sounds" / split, notes, per_class=4, seed=seed)
    audio = {
        "task": "audio-classification",
        "model": write_tiny_wav2vec2(tmp_path / "w2v2", hidden_size=32),
        "pretrained": False,
        "data.train": tmp_path / "sounds",
        "data.streaming": True,
        "data.max_duration_s": 0.3,
        "train.max_steps": 2,
        "train.batch_size": 4,
        "train.log_with": "[]",
        "train.progress_bar": False,
        "output_dir": tmp_path / "audio-run",
    }
    result = train(load_config(None, as_overrides(audio)))
    assert result.labels == ["high", "low"] and result.metrics["global_step"] == 2


def test_hub_dataset_is_loaded_as_a_stream(shards, tmp_path, monkeypatch):
    """A Hub id goes to load_dataset(..., streaming=True) (here a stand-in: no Hub access in the suite),
    its validation split read whole; task and columns come from the stream's features."""
    hub = datasets.load_dataset(str(shards))
    calls = []

    def load_dataset(path, name=None, split=None, **kwargs):
        calls.append((path, name, split, kwargs))
        streams = datasets.IterableDatasetDict({k: v.to_iterable_dataset(num_shards=4) for k, v in hub.items()})
        return streams[split] if split else streams

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    extra = {"task": "null", "data.train": "user/colours", "train.max_steps": 3}
    result = train(load_config(None, settings(shards, tmp_path / "run", **extra)))
    assert {call[3].get("streaming") for call in calls} == {True}
    assert result.metrics["global_step"] == 3 and result.adapter.task == "image-classification"


def test_streaming_needs_max_steps_and_held_out_validation(shards, tmp_path):
    with pytest.raises(ConfigError, match="train.max_steps is not set"):
        load_config(None, settings(shards, tmp_path / "o", **{"train.max_steps": "null"}))
    only_train = tmp_path / "only_train"
    only_train.mkdir()
    for shard in shards.glob("train-*"):
        (only_train / shard.name).symlink_to(shard)
    with pytest.raises(ConfigError, match="no validation split.*set data.validation"):
        train(load_config(None, settings(only_train, tmp_path / "o")))


# Both runs in one launch (train() closes its Accelerator and keeps the process group): one start-up, not two.
_RUNS = """import json, sys
from hf_transfer import load_config, train
for args in json.load(open(sys.argv[1])):
    train(load_config(None, args))
"""


@pytest.mark.slow  # two CPU processes on a shared 2-core machine: about a minute
def test_two_processes_read_their_own_shards_and_resume_exactly(shards, tmp_path):
    """accelerate launch, 2 CPU processes: each reads 2 of the 4 shards (48 examples, 6 batches of 8),
    so at step 8 each is in its second pass; resumed from step 4, the run ends where it ended."""
    common = {"train.max_steps": 10, "train.checkpoint_every_steps": 4, "train.save_total_limit": 5}
    common["data.shuffle_buffer"] = 0
    checkpoint = tmp_path / "full" / "checkpoints" / "step_0000004"
    runs = [
        settings(shards, tmp_path / "full", **common),
        settings(shards, tmp_path / "resumed", **common, **{"train.resume_from_checkpoint": str(checkpoint)}),
    ]
    (tmp_path / "runs.json").write_text(json.dumps(runs))
    (tmp_path / "runs.py").write_text(_RUNS)
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    cmd += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    out = subprocess.run(
        [*cmd, str(tmp_path / "runs.py"), str(tmp_path / "runs.json")],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert out.returncode == 0, failure_lines(out.stderr)
    full, resumed = (json.loads((tmp_path / name / "metrics.json").read_text()) for name in ("full", "resumed"))
    step_8 = tmp_path / "full" / "checkpoints" / "step_0000008"
    states = [json.loads((step_8 / f"loader_state_{rank}.json").read_text()) for rank in (0, 1)]
    assert [s["epoch"] for s in states] == [1, 1]  # 6 batches per pass: each process reads half the stream
    assert resumed["global_step"] == full["global_step"] == 10
    assert resumed["loss"] == pytest.approx(full["loss"], abs=1e-6)
    a, b = (load_file(str(tmp_path / name / "model.safetensors")) for name in ("full", "resumed"))
    assert all(torch.equal(a[k], b[k]) for k in a)
