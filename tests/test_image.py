"""The image adapter on the shared engine: every strategy trains, changes exactly what it should,
saves to what standard loaders reload identically, resumes to the uninterrupted end state."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from accelerate.utils import set_seed
from conftest import changed_tensors, tiny_image_overrides, write_tiny_vit
from peft import PeftModel
from PIL import Image

from hf_transfer import ADAPTERS, load_config, train
from hf_transfer.core.errors import ConfigError, DataError, ModelError


def _batch(result, n: int = 6) -> dict[str, torch.Tensor]:
    """Evaluation pixels of validation files, normalised as the model takes them."""
    adapter = result.adapter
    files = sorted(Path(adapter.config.data.validation).rglob("*.png"))[:n]
    batch = adapter.inputs.model_inputs({adapter.inputs.input_column: [str(f) for f in files]})
    return {"pixel_values": adapter.models.backend.normalise(batch["pixel_values"])}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One finished run per strategy (shared by the tests below to keep the suite fast)."""
    from conftest import write_color_images

    root = tmp_path_factory.mktemp("image_runs")
    train_dir = write_color_images(root / "train", per_class=16, seed=0)
    val_dir = write_color_images(root / "validation", per_class=6, seed=1, modes=False)
    results = {}
    for strategy, lr in (("full", 0.003), ("linear_probe", 0.05), ("lora", 0.02)):
        overrides = tiny_image_overrides(train_dir, val_dir, root / strategy, strategy=strategy, **{"train.lr": lr})
        config = load_config(None, overrides)
        results[strategy] = (config, train(config))
    return results


@pytest.mark.parametrize("strategy", ["full", "linear_probe", "lora"])
def test_strategy_learns(runs, strategy):
    config, result = runs[strategy]
    history = result.metrics["history"]
    assert all(torch.isfinite(torch.tensor(h["loss"])) for h in history)
    assert history[-1]["loss"] < history[0]["loss"]
    assert result.metrics["accuracy"] > 0.6  # 3 balanced classes: chance is 1/3
    out = Path(config.output_dir)
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("accuracy", "f1_macro", "loss", "train_runtime", "train_samples_per_second"):
        assert isinstance(metrics[key], float)
    assert load_config(out / "config.yaml").strategy == strategy  # the resolved config round-trips


@pytest.mark.parametrize("strategy", ["full", "linear_probe", "lora"])
def test_strategy_changes_exactly_its_parameters(runs, strategy):
    config, result = runs[strategy]
    changed = changed_tensors(config, result)
    if strategy == "full":
        trainable = {n for n, p in result.model.named_parameters()}
        assert trainable <= changed
    elif strategy == "linear_probe":
        # Only the head; BatchNorm running statistics of the frozen backbone are untouched too.
        assert changed == {"classifier.weight", "classifier.bias"}
    else:
        assert changed, "LoRA changed nothing"
        for key in changed:
            assert "lora_" in key or "modules_to_save" in key, key
        assert any("lora_B" in k for k in changed)
        assert any("classifier.modules_to_save" in k for k in changed)


def test_full_and_probe_reload_through_timm(runs):
    for strategy in ("full", "linear_probe"):
        config, result = runs[strategy]
        reloaded = timm.create_model(f"local-dir:{config.output_dir}", pretrained=True).eval()
        assert reloaded.num_classes == 3
        batch = _batch(result)
        with torch.no_grad():
            expected = result.model.eval()(batch["pixel_values"])
            assert torch.allclose(reloaded(batch["pixel_values"]), expected, atol=1e-5)


def test_lora_reloads_through_peft(runs):
    config, result = runs["lora"]
    # The base is randomly initialised here (no Hub): rebuild the same one, as a Hub base would load.
    set_seed(config.train.seed)
    base = ADAPTERS.get(config.task)(config).models.build_model(result.labels)
    reloaded = PeftModel.from_pretrained(base, config.output_dir).eval()
    batch = _batch(result)
    with torch.no_grad():
        expected = result.model.eval()(batch["pixel_values"])
        assert torch.allclose(reloaded(batch["pixel_values"]), expected, atol=1e-5)


@pytest.mark.parametrize("strategy", ["full", "lora"])
def test_run_output_is_a_model_for_a_new_label_set(runs, strategy, tmp_path):
    """Chained transfer: backbone kept (LoRA merged), new head sized to the new labels."""
    config, result = runs[strategy]
    new = load_config(None, [f"model={config.output_dir}", "data.image_size=32"])
    adapter = ADAPTERS.get("image-classification")(new)
    model = adapter.models.build_model(["a", "b", "c", "d", "e"])
    assert model.get_classifier().out_features == 5
    # merge_and_unload works in place: merge a copy, the fixture's model is shared with other tests.
    trained = copy.deepcopy(result.model).merge_and_unload() if strategy == "lora" else result.model
    old, fresh = trained.state_dict(), model.state_dict()
    backbone = [k for k in fresh if not k.startswith("classifier.")]
    assert all(torch.equal(old[k], fresh[k]) for k in backbone)


def test_resume_mid_epoch_equals_uninterrupted(color_data, tmp_path):
    train_dir, val_dir = color_data
    common = {"strategy": "full", "train.epochs": 2, "train.checkpoint_every_steps": 2, "train.save_total_limit": 20}
    full = train(load_config(None, tiny_image_overrides(train_dir, val_dir, tmp_path / "a", **common)))
    # Simulate a crash in epoch 1: keep only the checkpoints written up to step 8 (epoch 0 has 7 steps).
    crashed = tmp_path / "b"
    shutil.copytree(tmp_path / "a" / "checkpoints", crashed / "checkpoints")
    for ckpt in (crashed / "checkpoints").glob("step_*"):
        if int(ckpt.name.split("_")[1]) > 8:
            shutil.rmtree(ckpt)
    resumed_overrides = tiny_image_overrides(
        train_dir, val_dir, crashed, **common, **{"train.resume_from_checkpoint": "latest"}
    )
    resumed = train(load_config(None, resumed_overrides))
    assert resumed.fit.global_step == full.fit.global_step
    assert [round(h["loss"], 5) for h in resumed.metrics["history"]] == [
        round(h["loss"], 5) for h in full.metrics["history"]
    ]
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-6) for k in a)
    # The validation report comes from the engine's best-epoch predictions, or is predicted again when
    # that epoch ran before the resume: either way the same numbers.
    report = "eval/best_model_validation.json"
    ours, theirs = (json.loads((root / report).read_text()) for root in (tmp_path / "a", crashed))
    assert ours["confusion_matrix"] == theirs["confusion_matrix"]
    assert ours["metrics"]["accuracy"] == full.metrics["accuracy"]


def test_every_checkpoint_holds_the_loader_position_and_a_resume_from_it_is_exact(color_data, tmp_path):
    """Issue 19's one loader protocol, map-style: each checkpoint (mid-epoch and at an epoch's end) holds the
    training loader's position (loader_state_0.json: epoch, micro-batches of it trained), which counts the
    steps taken; resumed mid-epoch from it, the run ends bit-identical to the uninterrupted one."""
    train_dir, val_dir = color_data
    per_epoch = len(list(train_dir.rglob("*.png"))) // 8  # batches of 8, the ragged last one dropped
    common = {"train.epochs": 2, "train.checkpoint_every_steps": 3, "train.save_total_limit": 20}
    full = train(load_config(None, tiny_image_overrides(train_dir, val_dir, tmp_path / "full", **common)))
    checkpoints = sorted((tmp_path / "full" / "checkpoints").glob("step_*"))
    steps = [int(path.name.split("_")[1]) for path in checkpoints]
    assert steps == sorted({*range(3, 2 * per_epoch, 3), per_epoch, 2 * per_epoch})
    for step, path in zip(steps, checkpoints, strict=True):
        position = json.loads((path / "loader_state_0.json").read_text())
        assert (position["kind"], position["batch_size"], position["processes"]) == ("map", 8, 1)
        assert position["epoch"] * per_epoch + position["batches"] == step, path.name
    middle = next(path for step, path in zip(steps, checkpoints, strict=True) if step > per_epoch)
    extra = {**common, "train.resume_from_checkpoint": str(middle)}
    resumed = train(load_config(None, tiny_image_overrides(train_dir, val_dir, tmp_path / "resumed", **extra)))
    assert resumed.fit.global_step == full.fit.global_step == 2 * per_epoch
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a), f"weights differ after resuming from {middle.name}"


def test_a_checkpoint_at_a_new_best_links_the_best_weights_as_its_model_and_resumes_exactly(color_data, tmp_path):
    """A checkpoint written right after an evaluation that improved holds the same weights twice (its model and
    the run's best): the model file is a hard link to the best file instead of a second write of the tensors.
    A mid-epoch checkpoint (no evaluation at its step) writes its own. Resumed from a linked one, the run ends
    bit-identical to the uninterrupted one."""
    train_dir, val_dir = color_data
    per_epoch = len(list(train_dir.rglob("*.png"))) // 8
    common = {"train.epochs": 2, "train.checkpoint_every_steps": 3, "train.save_total_limit": 20}
    full = train(load_config(None, tiny_image_overrides(train_dir, val_dir, tmp_path / "full", **common)))
    key = load_config(tmp_path / "full" / "config.yaml").train.metric_for_best_model
    improved, best = [], None  # the steps of the evaluations that were a new best, as the engine judges it
    for h in full.metrics["history"]:
        if best is None or (h[key] < best if key == "loss" else h[key] > best):
            improved.append(h["step"])
            best = h[key]
    assert improved[0] == per_epoch  # the first evaluation is always a new best
    checkpoints = {int(p.name.split("_")[1]): p for p in (tmp_path / "full" / "checkpoints").glob("step_*")}
    for step, path in checkpoints.items():
        best_file = path / "best.safetensors"  # absent before the first evaluation
        linked = best_file.is_file() and (path / "model.safetensors").samefile(best_file)
        assert linked == (step in improved), f"{path.name}: linked={linked}, evaluations that improved: {improved}"
    linked_checkpoint = checkpoints[per_epoch]
    extra = {**common, "train.resume_from_checkpoint": str(linked_checkpoint)}
    resumed = train(load_config(None, tiny_image_overrides(train_dir, val_dir, tmp_path / "resumed", **extra)))
    assert resumed.fit.global_step == full.fit.global_step == 2 * per_epoch
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a), "weights differ after resuming from a linked checkpoint"


def test_tied_weights_are_copied_for_safetensors_and_keep_the_checkpoint_from_linking_them():
    """A model with tied weights: the best-weights file holds each tie as its own copy (safetensors refuses shared
    memory), which Accelerate's own save would drop, so such a file is never linked as a checkpoint's model."""
    from hf_transfer.engine.loop import _unshare

    shared = torch.ones(3)
    out, tied = _unshare({"a": shared, "b": shared, "c": torch.zeros(2)})
    assert tied and out["a"].data_ptr() != out["b"].data_ptr() and torch.equal(out["a"], out["b"])
    _, tied = _unshare({"a": torch.ones(3), "c": torch.zeros(2)})
    assert not tied


def test_resume_against_different_labels_is_an_error(color_data, tmp_path):
    train_dir, val_dir = color_data
    out = tmp_path / "run"
    train(load_config(None, tiny_image_overrides(train_dir, val_dir, out, **{"train.epochs": 1})))
    (train_dir / "purple").mkdir()
    shutil.copy(next((train_dir / "red").glob("*.png")), train_dir / "purple" / "x.png")
    overrides = tiny_image_overrides(train_dir, val_dir, out, **{"train.resume_from_checkpoint": "latest"})
    with pytest.raises(ConfigError, match="trained on labels"):
        train(load_config(None, overrides))


def test_transformers_image_model(tmp_path, color_data):
    """A transformers image classifier (tiny ViT from a config) through the same engine, with LoRA
    on the attention projections and the processor's own eval preprocessing."""
    folder = tmp_path / "tiny-vit"
    vit = write_tiny_vit(folder)
    train_dir, val_dir = color_data
    overrides = tiny_image_overrides(
        train_dir, val_dir, tmp_path / "out", model=folder, strategy="lora", **{"train.lr": 0.02}
    )
    result = train(load_config(None, overrides))
    assert result.adapter.models.head_modules(result.model.base_model.model) == ["classifier"]
    targets = result.adapter.models.lora_target_modules(vit)
    # Every linear projection inside attention (q, k, v, output), in both layers; no MLP, no head.
    assert len(targets) == 2 * 4 and all(".attention." in t for t in targets)
    assert all(isinstance(vit.get_submodule(t), torch.nn.Linear) for t in targets)
    assert result.metrics["accuracy"] > 0.5
    assert (tmp_path / "out" / "adapter_config.json").is_file()


# ------------------------------------------------------------------------------------ bad input


def test_missing_folder(tmp_path):
    overrides = tiny_image_overrides(tmp_path / "nope", tmp_path / "nope", tmp_path / "o")
    with pytest.raises(DataError, match="does not exist"):
        train(load_config(None, overrides))


def test_empty_class_folder(color_data, tmp_path):
    train_dir, val_dir = color_data
    (train_dir / "yellow").mkdir()
    with pytest.raises(DataError, match="yellow.*is empty"):
        train(load_config(None, tiny_image_overrides(train_dir, val_dir, tmp_path / "o")))


def test_undecodable_image_is_named(color_data, tmp_path):
    train_dir, val_dir = color_data
    broken = val_dir / "green" / "broken.png"
    broken.write_bytes(b"not a png at all")
    with pytest.raises(DataError, match="broken.png"):
        train(load_config(None, tiny_image_overrides(train_dir, val_dir, tmp_path / "o", **{"train.epochs": 1})))


def test_unknown_model(color_data, tmp_path):
    train_dir, val_dir = color_data
    with pytest.raises(ModelError, match="not_a_model"):
        train(load_config(None, tiny_image_overrides(train_dir, val_dir, tmp_path / "o", model="not_a_model")))


def test_lora_targets_that_match_nothing(color_data, tmp_path):
    train_dir, val_dir = color_data
    overrides = tiny_image_overrides(
        train_dir, val_dir, tmp_path / "o", strategy="lora", **{"lora.target_modules": "[nothing_here]"}
    )
    with pytest.raises(ModelError, match="match no module"):
        train(load_config(None, overrides))


def test_lora_target_inside_head_is_refused(color_data, tmp_path):
    train_dir, val_dir = color_data
    overrides = tiny_image_overrides(
        train_dir, val_dir, tmp_path / "o", strategy="lora", **{"lora.target_modules": "[classifier]"}
    )
    with pytest.raises(ModelError, match="inside the head"):
        train(load_config(None, overrides))


def test_label_column_absent(tmp_path):
    csv = tmp_path / "data.csv"
    csv.write_text("image,category\na.png,x\n")
    overrides = tiny_image_overrides(csv, csv, tmp_path / "o")
    with pytest.raises(DataError, match="Column 'label' not found.*data.label_column"):
        train(load_config(None, overrides))


def test_unseen_validation_label(color_data, tmp_path):
    train_dir, val_dir = color_data
    (val_dir / "purple").mkdir()
    shutil.copy(next((val_dir / "red").glob("*.png")), val_dir / "purple" / "x.png")
    with pytest.raises(DataError, match="'purple', which is not in the training labels"):
        train(load_config(None, tiny_image_overrides(train_dir, val_dir, tmp_path / "o")))


def test_csv_with_own_column_names_and_relative_paths(color_data, tmp_path):
    """A CSV beside its images: paths relative to the CSV, custom image and label column names,
    string labels, no validation file (a seeded stratified split of train)."""
    train_dir, _ = color_data
    rows = ["file,colour"] + [
        f"{p.relative_to(train_dir.parent)},{p.parent.name}" for p in sorted(train_dir.rglob("*.png"))
    ]
    csv = train_dir.parent / "index.csv"
    csv.write_text("\n".join(rows) + "\n")
    overrides = tiny_image_overrides(csv, csv, tmp_path / "o", **{"data.image_column": "file"})
    overrides = [o for o in overrides if not o.startswith("data.validation=")]
    overrides += ["data.label_column=colour", "data.validation_split=0.25"]
    result = train(load_config(None, overrides))
    assert result.labels == ["blue", "green", "red"]
    assert result.metrics["accuracy"] > 0.6
    assert len(result.metrics["history"]) == 3


# ------------------------------------------------------------------------------------ image modes

# 16-bit grey levels and the 8-bit levels a viewer (and Pillow, for 16-bit RGB) shows for them: the top 8 bits.
_LEVELS = np.array([[0, 255, 256, 1000, 30000, 65535]] * 2, dtype=np.uint16)
_LEVELS_8 = np.array([[0, 0, 1, 3, 117, 255]] * 2, dtype=np.uint8)


def _mode_image(mode: str) -> Image.Image:
    """A small image in `mode`: 16-bit and 32-bit grey from known levels, the others from random RGB with an
    alpha channel that holds fully transparent, half and opaque pixels."""
    if mode.startswith("I;16"):  # from raw bytes: Pillow's convert() between these modes clips at 255
        order = ">" if mode == "I;16B" else "<" if mode in ("I;16", "I;16L") else "="
        return Image.frombytes(mode, (6, 2), _LEVELS.astype(f"{order}u2").tobytes())
    if mode == "I":
        return Image.fromarray(_LEVELS.astype(np.int32))
    rng = np.random.default_rng(0)
    rgba = rng.integers(0, 256, size=(2, 6, 4), dtype=np.uint8)
    rgba[..., 3] = [[0, 128, 255, 0, 64, 255]] * 2
    return Image.fromarray(rgba, "RGBA").convert(mode)


def _expected_rgb(image: Image.Image) -> np.ndarray:
    """What a viewer shows: 16-bit grey by its top 8 bits; transparency over white; else Pillow's conversion."""
    if image.mode.startswith("I"):
        return np.repeat(_LEVELS_8[..., None], 3, axis=2)
    if image.has_transparency_data:  # an alpha band, or a palette (P) with transparent entries
        straight = image.convert("LA") if image.mode == "La" else image  # Pillow converts La only to LA
        rgba = np.asarray(straight.convert("RGBA"), dtype=np.float64)
        alpha = rgba[..., 3:] / 255
        return np.round(rgba[..., :3] * alpha + 255 * (1 - alpha)).astype(np.uint8)
    return np.asarray(image.convert("RGB"))


def _as_files(image: Image.Image, folder: Path) -> list[Path]:
    """The image saved in each format that keeps its mode (how it reaches a user's folder), if any."""
    files = []
    for suffix in (".png", ".tiff"):
        path = folder / f"{image.mode.replace(';', '_')}{suffix}"
        try:
            image.save(path)
        except (OSError, ValueError, KeyError):
            continue
        with Image.open(path) as reopened:
            if reopened.mode == image.mode:
                files.append(path)
    return files


@pytest.mark.parametrize("mode", sorted(Image.MODES))
def test_every_pillow_mode_decodes_to_the_rgb_a_viewer_shows(mode, tmp_path):
    """Each of Pillow's modes, in memory, as a file (PNG/TIFF where they keep it) and as bytes in the data,
    decodes to the expected RGB, or is refused by name when it has no standard scale (F, 32-bit I)."""
    from hf_transfer.adapters.image import open_image

    if mode == "F":
        image = Image.fromarray(_LEVELS.astype(np.float32) / 65535)
        for cell in (image, *map(str, _as_files(image, tmp_path))):
            with pytest.raises(DataError, match=r"32-bit floats \(Pillow mode F\).*Convert it to an 8- or 16-bit"):
                open_image(cell)
        return
    image = _mode_image(mode)
    assert image.mode == mode
    cells = [(image, image)]
    for file in _as_files(image, tmp_path):  # the file as saved (a TIFF keeps no palette transparency)
        saved = Image.open(file)
        cells += [(str(file), saved), ({"bytes": file.read_bytes(), "path": None}, saved)]
    for cell, source in cells:
        decoded = open_image(cell)
        assert decoded.mode == "RGB" and decoded.size == image.size
        difference = np.abs(np.asarray(decoded, dtype=int) - _expected_rgb(source).astype(int)).max()
        assert difference <= 1, f"{mode} from {type(cell).__name__}: off by {difference}"


def test_sixteen_bit_png_is_not_white_and_wide_integers_are_refused(tmp_path):
    """The report: a 16-bit PNG trained as an all-white image. Pillow opens 16-bit PGM as mode I too."""
    from hf_transfer.adapters.image import open_image

    Image.fromarray(_LEVELS).save(tmp_path / "scan.png")
    assert np.array_equal(np.asarray(open_image(str(tmp_path / "scan.png")))[..., 0], _LEVELS_8)
    (tmp_path / "scan.pgm").write_bytes(b"P5 6 2 65535\n" + _LEVELS.astype(">u2").tobytes())
    assert np.array_equal(np.asarray(open_image(str(tmp_path / "scan.pgm")))[..., 0], _LEVELS_8)
    wide = Image.fromarray(np.array([[0, 70_000]], dtype=np.int32))
    with pytest.raises(DataError, match="32-bit integers from 0 to 70000"):
        open_image(wide)


def test_exif_orientation_is_applied(tmp_path):
    """A photo whose EXIF says 'rotate 90°' (phones write this) decodes upright, as datasets' Image shows it."""
    from hf_transfer.adapters.image import open_image

    pixels = np.arange(2 * 4 * 3, dtype=np.uint8).reshape(2, 4, 3) * 10
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90° clockwise to display
    Image.fromarray(pixels).save(tmp_path / "photo.png", exif=exif)
    decoded = np.asarray(open_image(str(tmp_path / "photo.png")))
    assert decoded.shape == (4, 2, 3)
    assert np.array_equal(decoded, np.rot90(pixels, k=-1))
