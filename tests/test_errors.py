"""Inputs a user can get wrong end in one readable message (an HFTransferError, one line from the CLI),
raised before training time is spent; data is never allowed to run code."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import sys
import typing
from pathlib import Path

import artifact_runs as R
import numpy as np
import pytest
import torch
from conftest import as_overrides, tiny_image_overrides, write_color_images, write_tiny_vit
from PIL import Image

from hf_transfer import ADAPTERS, load_config, train
from hf_transfer.adapters.image import open_image
from hf_transfer.artifacts.card import write_model_card
from hf_transfer.cli import COMMANDS, main
from hf_transfer.config.schema import RunConfig
from hf_transfer.core.errors import ConfigError, DataError, HFTransferError, ModelError
from hf_transfer.data.sources import open_source
from hf_transfer.data.splits import load_source
from hf_transfer.inference import load_run

# --------------------------------------------------------------------------- 1. trust_remote_code


def _plant_remote_code(model_dir: Path, marker: Path, module: str) -> None:
    """Point the model folder's auto_map at a modeling file that leaves `marker` when imported."""
    (model_dir / f"{module}.py").write_text(
        "from pathlib import Path\n\n"
        f"Path({str(marker)!r}).write_text('imported')\n\n"
        "from transformers import ViTForImageClassification\n\n\n"
        "class PlantedModel(ViTForImageClassification):\n"
        "    pass\n"
    )
    config_path = model_dir / "config.json"
    config = json.loads(config_path.read_text())
    config["auto_map"] = {"AutoModelForImageClassification": f"{module}.PlantedModel"}
    config_path.write_text(json.dumps(config))


def _trusting_run_config(run_dir: Path, **changes: object) -> None:
    """Rewrite the run's config.yaml as a downloaded run folder could: trust_remote_code: true."""
    config = load_config(run_dir / "config.yaml")
    (run_dir / "config.yaml").write_text(dataclasses.replace(config, trust_remote_code=True, **changes).to_yaml())


def _full_run_folder(root: Path) -> Path:
    """A finished full-fine-tuning run folder (the model saved in it), written by hand: no training needed."""
    run_dir = root / "full_run"
    write_tiny_vit(run_dir)
    config = RunConfig(task="image-classification", model="tiny-vit", output_dir=str(run_dir))
    (run_dir / "config.yaml").write_text(config.to_yaml())
    info = {"task": "image-classification", "labels": ["a", "b"], "strategy": "full", "model": "tiny-vit"}
    (run_dir / "run_info.json").write_text(json.dumps(info))
    return run_dir


def _lora_run_folder(root: Path, factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A LoRA run folder and a copy of its base folder (which the run's config.yaml now names)."""
    run_dir = shutil.copytree(R.vit_lora(factory).output_dir, root / "lora_run")
    base = shutil.copytree(R.tiny_vit_folder(factory), root / "lora_base")
    return run_dir, base


@pytest.fixture
def isolated_remote_code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """transformers copies remote code into HF_MODULES_CACHE and puts it on sys.path: keep both in tmp_path."""
    import transformers.dynamic_module_utils as dynamic

    monkeypatch.setattr(dynamic, "HF_MODULES_CACHE", str(tmp_path / "modules"))
    monkeypatch.setattr(sys, "path", list(sys.path))


@pytest.mark.parametrize("strategy", ["full", "lora"])
def test_load_run_never_takes_trust_remote_code_from_the_run_folder(
    strategy, tmp_path, tmp_path_factory, isolated_remote_code
):
    marker = tmp_path / f"remote_code_ran_{strategy}"
    if strategy == "full":
        run_dir = model_dir = _full_run_folder(tmp_path)
        _trusting_run_config(run_dir)
    else:
        run_dir, model_dir = _lora_run_folder(tmp_path, tmp_path_factory)
        _trusting_run_config(run_dir, model=str(model_dir))
    _plant_remote_code(model_dir, marker, module=f"modeling_planted_{strategy}")

    run = load_run(run_dir, device="cpu")
    assert not marker.exists(), "load_run ran the run folder's own modeling code"
    assert run.config.trust_remote_code is False
    assert type(run.model).__name__ == "ViTForImageClassification"  # transformers' built-in class instead

    # The caller can still opt in, and then the planted code does run: the check above is not vacuous.
    trusted = load_run(run_dir, device="cpu", trust_remote_code=True)
    assert marker.exists() and trusted.config.trust_remote_code is True


def test_custom_architecture_asks_for_the_flag(tmp_path, isolated_remote_code):
    """A model_type transformers does not know cannot fall back to a built-in class: one message, no code run."""
    marker = tmp_path / "remote_code_ran"
    run_dir = _full_run_folder(tmp_path)
    _trusting_run_config(run_dir)
    _plant_remote_code(run_dir, marker, module="modeling_planted_custom")
    config = json.loads((run_dir / "config.json").read_text())
    config["model_type"] = "planted"
    config["auto_map"]["AutoConfig"] = "configuration_planted.PlantedConfig"
    (run_dir / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelError, match="--trust-remote-code") as err:
        load_run(run_dir, device="cpu")
    assert not marker.exists() and "\n" not in str(err.value)


@pytest.mark.parametrize("command", ["predict", "evaluate"])
def test_trust_remote_code_flag_reaches_load_run(command, tmp_path, monkeypatch, capsys):
    import hf_transfer.inference

    calls = []

    def fake_load_run(output_dir, device=None, trust_remote_code=False):
        calls.append(trust_remote_code)
        raise DataError("stop here")

    monkeypatch.setattr(hf_transfer.inference, "load_run", fake_load_run)
    extra = ["x.png"] if command == "predict" else ["--data", "x"]
    assert main([command, str(tmp_path), *extra]) == 2
    assert main([command, str(tmp_path), *extra, "--trust-remote-code"]) == 2
    assert calls == [False, True]


# --------------------------------------------------------------------------- 2a. empty data files


@pytest.mark.parametrize("content", ["image,label\n", ""], ids=["header_only", "zero_bytes"])
def test_empty_csv_is_one_message(content, tmp_path):
    path = tmp_path / "train.csv"
    path.write_text(content)
    with pytest.raises(DataError, match=re.escape(str(path))) as err:
        load_source(str(path), "imagefolder", "image")
    assert "\n" not in str(err.value) and "row" in str(err.value)


@pytest.mark.parametrize("content", ["image,label\n", ""], ids=["header_only", "zero_bytes"])
def test_empty_validation_csv_fails_in_the_cli_before_training(content, color_data, tmp_path, capsys):
    train_dir, _ = color_data
    validation = tmp_path / "validation.csv"
    validation.write_text(content)
    overrides = tiny_image_overrides(train_dir, validation, tmp_path / "out")
    assert main(["train", *overrides]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]  # after datasets' progress bars
    assert last.startswith("hf-transfer: error: Data file") and str(validation) in last
    assert not (tmp_path / "out" / "metrics.json").exists()


# --------------------------------------------------------------------------- 2a'. a folder's metadata and names


def test_metadata_file_name_outside_the_folder_names_the_row(tmp_path):
    """The builders ended this in "An error occurred while generating the dataset", the cause dropped."""
    root = write_color_images(tmp_path / "data", per_class=2, modes=False)
    rows = ["file_name,label", "red/000.png,red", "green/000.png,green", "../elsewhere.png,blue"]
    (root / "metadata.csv").write_text("\n".join(rows) + "\n")
    message = (
        f"Row 2 of {str(root / 'metadata.csv')!r} (counted from 0, after any header) names the file '../elsewhere.png'"
    )
    with pytest.raises(DataError, match=re.escape(message)) as err:
        load_source(str(root), "imagefolder", "image")
    assert "Move the file into that folder" in str(err.value)


def test_a_metadata_row_without_a_file_name_is_named(tmp_path):
    root = write_color_images(tmp_path / "data", per_class=2, modes=False)
    (root / "metadata.csv").write_text("file_name,label\nred/000.png,red\n,green\ngreen/000.png,green\n")
    message = (
        f"Row 1 of {str(root / 'metadata.csv')!r} (counted from 0, after any header) has no file_name: name the "
        "file of that example, or remove the row."
    )
    with pytest.raises(DataError, match=re.escape(message)):
        load_source(str(root), "imagefolder", "image")


def test_a_folder_with_nothing_readable_names_every_kind_it_reads(tmp_path):
    """Task unset, the task is inferred from the files; a text run reads tables only: both messages name
    webdataset shards among what a folder may hold."""
    from hf_transfer.data.columns import infer_task

    folder = tmp_path / "stuff"
    folder.mkdir()
    (folder / "notes.txt").write_text("nothing a run reads")
    with pytest.raises(ConfigError) as err:
        infer_task(str(folder), None, None, False)
    assert str(err.value) == (
        f"Folder {str(folder)!r} holds no image, audio or csv/json/parquet files, nor webdataset .tar shards."
    )
    with pytest.raises(DataError) as err:
        open_source(str(folder), None)
    assert str(err.value) == (
        f"Folder {str(folder)!r} holds no csv/json/parquet files or webdataset .tar shards and is no save_to_disk "
        "folder: this task reads tables (a data file, a folder of them, a save_to_disk folder or a Hub dataset id)."
    )


def test_non_utf8_names_and_metadata_are_named_with_the_fix(tmp_path):
    root = write_color_images(tmp_path / "data", per_class=2, modes=False)
    latin1 = os.fsdecode(b"caf\xe9.png")  # a Latin-1 name, as an old zip archive leaves it
    shutil.copy(root / "red" / "000.png", root / "red" / latin1)
    with pytest.raises(DataError, match=r"red/caf\\xe9.png' has a name that is not UTF-8 text.*convmv"):
        load_source(str(root), "imagefolder", "image")
    (root / "red" / latin1).unlink()

    (root / "metadata.csv").write_bytes(b"file_name,label\nred/000.png,red\ngreen/000.png,gr\xfcn\n")
    with pytest.raises(DataError, match=r"is not UTF-8 text: line 3 holds the byte 0xfc.*Save the file as UTF-8"):
        load_source(str(root), "imagefolder", "image")
    tables = tmp_path / "tables"
    tables.mkdir()
    (tables / "train.csv").write_text("text,label\ngood,a\nbad,b\n")
    (tables / "test.csv").write_bytes(b"text,label\nfine,a\nna\xefve,b\n")
    with pytest.raises(DataError, match=r"test.csv' is not UTF-8 text: line 3 holds the byte 0xef"):
        open_source(str(tables), None)


def _parquet_with_a_broken_image(path: Path, rows: int, broken: int) -> Path:
    """Colour images stored as PNG bytes in a parquet file (as datasets writes them), row `broken` not an image."""
    import io

    from datasets import ClassLabel, Dataset, Features
    from datasets import Image as ImageFeature

    rng = np.random.default_rng(0)
    cells = []
    for i in range(rows):
        pixels = rng.integers(0, 90, size=(24, 24, 3), dtype=np.uint8)
        pixels[..., i % 3] = 200
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, "PNG")
        cells.append({"bytes": buffer.getvalue(), "path": None})
    cells[broken] = {"bytes": b"not an image at all", "path": None}
    features = Features({"image": ImageFeature(), "label": ClassLabel(names=["red", "green", "blue"])})
    Dataset.from_dict({"image": cells, "label": [i % 3 for i in range(rows)]}, features=features).to_parquet(str(path))
    return path


@pytest.mark.parametrize("cache", [True, False], ids=["decoded_once", "decoded_per_batch"])
def test_broken_image_bytes_in_parquet_name_the_file_and_row(cache, tmp_path):
    """Bytes in the data have no file name: the row of the source says which (also once a held-out split
    or a subset renumbered the rows), where it said <_io.BytesIO object at 0x...>."""
    data = _parquet_with_a_broken_image(tmp_path / "train.parquet", rows=30, broken=17)
    overrides = tiny_image_overrides(data, "null", tmp_path / "out", **{"train.batch_size": 4})
    overrides.append(f"data.decode_cache={str(cache).lower()}")
    message = (
        f"Row 17 of {str(data)!r} (counted from 0): cannot decode the image bytes in the data: cannot identify "
        "image file. Replace or remove that example."
    )
    with pytest.raises(DataError, match=re.escape(message)):
        train(load_config(None, overrides))


# --------------------------------------------------------------------------- 2b. one class folder


def test_image_folder_with_one_class_asks_for_two(tmp_path):
    root = write_color_images(tmp_path / "data", per_class=2, modes=False)
    for name in ("green", "blue"):
        shutil.rmtree(root / name)
    with pytest.raises(DataError, match="at least two class folders") as err:
        load_source(str(root), "imagefolder", "image")
    assert str(root) in str(err.value)


# --------------------------------------------------------------------------- 2c. pretrained while offline


@pytest.fixture
def offline_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """HF_HUB_OFFLINE with an empty Hub cache: nothing is downloaded and nothing is cached."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))


def _image_model_error(model: str, pretrained: bool = True) -> str:
    config = load_config(None, as_overrides({"model": model, "pretrained": pretrained}))
    with pytest.raises(ModelError) as err:
        ADAPTERS.get("image-classification")(config).models.build_model(["a", "b"])
    return str(err.value)


@pytest.mark.parametrize("model", ["resnet18", "google/vit-base-patch16-224"])
def test_pretrained_weights_missing_offline(model, offline_hub):
    message = _image_model_error(model)
    assert model in message and "offline" in message and "HF_HUB_OFFLINE" in message
    assert "weights" in message and "pypi:" in message and "\n" not in message


@pytest.mark.parametrize(
    ("model", "close"),
    [("resnet_nonexistent_xyz", "'resnet18'"), ("resnet181", "'resnet18'"), ("convnxt_tiny", "'convnext_tiny'")],
)
@pytest.mark.parametrize("pretrained", [True, False])
def test_a_timm_name_typo_offline_names_timms_close_names(model, close, pretrained, offline_hub):
    """Not "unset HF_HUB_OFFLINE": a bare name that timm does not know is a typo far more often than a
    Hub model missing from the cache, so the message says so first, with timm's nearest names."""
    message = _image_model_error(model, pretrained)
    assert message.startswith(f"Model {model!r} is not a timm model name (did you mean ")
    assert close in message and "local Hugging Face cache" in message and "unset HF_HUB_OFFLINE" not in message


def test_a_missing_model_folder_offline_is_named_as_a_folder(offline_hub, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    message = _image_model_error("runs/missing-run")
    assert f"is neither a local folder (nothing at {tmp_path / 'runs' / 'missing-run'})" in message


# --------------------------------------------------------------------------- 2d. numeric settings


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("train.lr", -1),
        ("train.lr", 0),
        ("train.lr", ".nan"),
        ("train.lr", "nan"),
        ("train.lr", ".inf"),
        ("train.lr", "fast"),
        ("train.weight_decay", -0.1),
        ("train.label_smoothing", 1.0),
        ("train.max_grad_norm", 0),
        ("lora.alpha", 0),
        ("lora.dropout", 1.0),
    ],
)
def test_numeric_settings_out_of_range(key, value):
    with pytest.raises(ConfigError, match=re.escape(key)) as err:
        load_config(None, [f"{key}={value}"])
    shown = str(value).lstrip(".").lower()
    assert shown in str(err.value).lower()


def _numeric_settings(cls: type = RunConfig, prefix: str = "") -> list[tuple[str, type, object]]:
    """(dotted key, number type, field metadata) of every numeric setting, lists of numbers included, in
    every section (the strategies' too)."""
    found = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = next((t for t in (hints[f.name], *typing.get_args(hints[f.name])) if t is not type(None)), None)
        item = typing.get_args(tp)[0] if typing.get_origin(tp) is list else tp
        if dataclasses.is_dataclass(tp):
            found += _numeric_settings(tp, f"{prefix}{f.name}.")
        elif item in (int, float):
            found.append((prefix + f.name, item, f.metadata))
    return found


def _outside(valid, kind: type) -> list[float]:
    """Values just outside a range: below its low bound, above its high one."""
    step = 1 if kind is int else 0.5
    values = []
    if valid.low is not None:
        values.append(valid.low if valid.low_open else valid.low - step)
    if valid.high is not None:
        values.append(valid.high if valid.high_open else valid.high + step)
    return values


@pytest.mark.parametrize(
    ("key", "kind", "metadata"), _numeric_settings(), ids=lambda v: v if isinstance(v, str) else ""
)
def test_every_numeric_setting_has_a_range_checked_when_the_config_loads(key, kind, metadata):
    valid = metadata.get("range")
    assert valid is not None, f"{key} declares no range: setting(default, help, Range(...))"
    assert valid.low is not None or valid.high is not None
    listed = key in ("data.crop_scale", "linear_probe.search_weight_decay")  # lists of numbers: each item checked
    for value in _outside(valid, kind):
        shown = f"[{value}, 1.0]" if listed else f"{value}"
        with pytest.raises(ConfigError, match=rf"^{re.escape(key)}(\[0\])? must be .*{re.escape(str(valid))}") as err:
            load_config(None, [f"{key}={shown}"])
        assert "\n" not in str(err.value)
    for bound, open_ in ((valid.low, valid.low_open), (valid.high, valid.high_open)):
        if bound is not None and not open_:  # a closed bound is itself valid
            value = kind(bound)
            loaded = load_config(None, [f"{key}=[{value}, {value}]" if listed else f"{key}={value}"])
            section, _, name = key.rpartition(".")
            assert getattr(getattr(loaded, section) if section else loaded, name) in (value, [value, value])


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.early_stopping_patience=0", "train.early_stopping_patience must be an integer >= 1 (or null), got 0"),
        ("train.early_stopping_patience=-3", "train.early_stopping_patience must be an integer >= 1"),
        ("train.seed=-1", "train.seed must be an integer in [0, 4294967295], got -1"),
        ("data.max_length=-5", "data.max_length must be an integer >= 1, got -5"),
        ("train.eval_batch_size=-2", "train.eval_batch_size must be an integer >= 1 (or null), got -2"),
        ("data.image_size=1e6", "data.image_size must be an integer in [16, 4096] (or null), got 1000000.0"),
        ("data.image_size=1000000", "data.image_size must be an integer in [16, 4096] (or null), got 1000000"),
    ],
)
def test_the_reported_out_of_range_values_are_refused(override, message):
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    assert str(err.value) == message or str(err.value).startswith(message)


def test_numeric_settings_in_range_are_kept():
    config = load_config(None, ["train.lr=1e-5", "train.weight_decay=0", "train.max_grad_norm=null", "lora.alpha=1"])
    assert config.train.lr == 1e-5 and config.train.max_grad_norm is None and config.lora.alpha == 1


# --------------------------------------------------------------------------- 2e. decompression bombs


def test_decompression_bomb_names_the_file_and_the_setting(tmp_path, monkeypatch):
    path = tmp_path / "huge.png"
    Image.new("RGB", (32, 32)).save(path)  # 1024 pixels: "huge" once the limit is lowered
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    monkeypatch.delenv("HF_TRANSFER_MAX_IMAGE_PIXELS", raising=False)
    with pytest.raises(DataError, match=re.escape(str(path))) as err:
        open_image(str(path))
    assert "HF_TRANSFER_MAX_IMAGE_PIXELS" in str(err.value)
    monkeypatch.setenv("HF_TRANSFER_MAX_IMAGE_PIXELS", "2000")
    assert open_image(str(path)).size == (32, 32)
    monkeypatch.setenv("HF_TRANSFER_MAX_IMAGE_PIXELS", "lots")
    with pytest.raises(ConfigError, match="HF_TRANSFER_MAX_IMAGE_PIXELS"):
        open_image(str(path))


# --------------------------------------------------------------------------- 2f/2g. the CLI's last resort


def _command_raising(monkeypatch: pytest.MonkeyPatch, error: BaseException, command: str = "train") -> None:
    help, add_arguments, _ = COMMANDS[command]

    def run(args):
        raise error

    monkeypatch.setitem(COMMANDS, command, (help, add_arguments, run))


def _raised(make) -> BaseException:
    """The exception `make()` raises: the real thing, not a hand-written copy of its message."""
    try:
        make()
    except BaseException as err:  # noqa: BLE001 - whatever it is, it is the point
        return err
    raise AssertionError("nothing was raised")


@pytest.mark.parametrize(
    "error",
    [
        torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
        RuntimeError("CUDA error: out of memory"),
        # What this machine's CPU allocator, Python and numpy raise when the RAM cannot hold an allocation.
        _raised(lambda: torch.empty(10**14, dtype=torch.uint8)),
        _raised(lambda: bytearray(10**15)),
        _raised(lambda: __import__("numpy").empty(10**15)),
        # A DataLoader worker killed by the kernel's out-of-memory killer.
        RuntimeError("DataLoader worker (pid 4242) is killed by signal: Killed. "),
    ],
    ids=["OutOfMemoryError", "device-RuntimeError", "cpu-allocator", "MemoryError", "numpy", "worker-killed"],
)
def test_out_of_memory_is_one_line_naming_the_knobs(error, monkeypatch, capsys):
    _command_raising(monkeypatch, error)
    assert main(["train"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "out of memory" in err.lower()
    for knob in ("train.batch_size", "train.gradient_accumulation_steps", "train.mixed_precision=bf16"):
        assert knob in err
    cpu = not isinstance(error, torch.OutOfMemoryError) and "CUDA" not in str(error)
    assert ("the machine's RAM" in err and "data.num_workers" in err) == cpu


@pytest.mark.parametrize(
    "command", [["predict", "runs/x", "a.png"], ["evaluate", "runs/x", "--data", "test.csv"]], ids=lambda c: c[0]
)
@pytest.mark.parametrize(
    ("error", "advice"),
    [
        (
            torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
            "on the device: lower --batch-size (or use --device cpu).",
        ),
        (_raised(lambda: torch.empty(10**14, dtype=torch.uint8)), "(the machine's RAM): lower --batch-size."),
    ],
    ids=["device", "cpu"],
)
def test_out_of_memory_in_predict_and_evaluate_names_their_own_option(command, error, advice, monkeypatch, capsys):
    """predict and evaluate take --batch-size, not the train.* settings a training run is told to lower."""
    _command_raising(monkeypatch, error, command[0])
    assert main(command) == 2
    assert capsys.readouterr().err == f"hf-transfer: error: Out of memory {advice}\n"


def test_unexpected_errors_are_one_line_unless_debug(monkeypatch, capsys):
    _command_raising(monkeypatch, KeyError("boom"))
    assert main(["train"]) == 1
    err = capsys.readouterr().err
    assert err.strip() == "hf-transfer: error: KeyError: 'boom' (run with --debug for the traceback)"
    with pytest.raises(KeyError, match="boom"):
        main(["--debug", "train"])


def test_user_errors_exit_2_and_debug_shows_them_in_full(monkeypatch, capsys):
    _command_raising(monkeypatch, DataError("Folder 'x' is empty."))
    assert main(["train"]) == 2
    assert capsys.readouterr().err == "hf-transfer: error: Folder 'x' is empty.\n"
    with pytest.raises(HFTransferError):
        main(["--debug", "train"])


# --------------------------------------------------------------------------- 2h. labels in the card


def test_card_escapes_labels(tmp_path):
    labels = ["a|b", "<script>x</script>", "fish & chips"]
    config = RunConfig(task="image-classification", model="resnet18", output_dir=str(tmp_path), strategy="full")
    per_class = {name: {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2} for name in labels}
    metrics = {"accuracy": 0.5, "f1_macro": 0.5, "loss": 1.0, "best_epoch": 1, "global_step": 3, "history": []}
    validation = {"per_class": per_class, "confusion_matrix": [[1, 1, 0], [0, 1, 1], [1, 0, 1]]}
    text = write_model_card(tmp_path, config, labels, metrics, validation).read_text()
    assert "<script>" not in text and "fish & chips" not in text
    lines = text.splitlines()
    header = lines.index("| class | precision | recall | F1 | support |")
    rows = lines[header + 2 : header + 2 + len(labels)]
    for row in rows:
        assert len(re.split(r"(?<!\\)\|", row)) == 7, row  # 5 cells between 6 unescaped pipes
    labels_line = next(line for line in lines if "**Labels" in line)
    assert "a\\|b" in labels_line and "&lt;script&gt;" in labels_line
