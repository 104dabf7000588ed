"""The data path and the fast paths: decode once, augmentation seeded per (seed, epoch, index) so that
workers and resumes change nothing, cached-feature probing, evaluation cadence, the defaults' guards."""

from __future__ import annotations

import importlib
import json
import logging
import shutil
from pathlib import Path

import pytest
import torch
from conftest import tiny_image_overrides

from hf_transfer import ADAPTERS, load_config, train
from hf_transfer.data.pipeline import ExampleView, decode_once, loader_settings
from hf_transfer.engine.evaluation import learned_nothing

AUGMENTED = {"data.crop_scale": "[0.5, 1.0]", "data.hflip": 0.5, "data.augment": True}


def _cache(tmp_path: Path, kind: str) -> list[Path]:
    return sorted((Path(tmp_path) / "cache" / kind).glob("*"))


def _run(train_dir, val_dir, out, cache: Path, **extra):
    overrides = tiny_image_overrides(train_dir, val_dir, out, **{"data.cache_dir": str(cache), **extra})
    return train(load_config(None, overrides))


def _losses(result) -> list[float]:
    return [h["loss"] for h in result.metrics["history"]]


def _same_weights(a, b, atol: float = 0.0) -> bool:
    sa, sb = a.model.state_dict(), b.model.state_dict()
    return sa.keys() == sb.keys() and all(torch.allclose(sa[k].float(), sb[k].float(), atol=atol) for k in sa)


# ------------------------------------------------------------------------- augmentation streams


def test_augmentation_is_a_function_of_seed_epoch_and_index(color_data, tmp_path):
    train_dir, val_dir = color_data
    config = load_config(None, tiny_image_overrides(train_dir, val_dir, tmp_path / "o", **AUGMENTED))
    adapter = ADAPTERS.get(config.task)(config)
    adapter.models.build_model(["blue", "green", "red"])
    from hf_transfer.data.splits import load_source

    rows = adapter.inputs.prepare_dataset(load_source(str(train_dir), "imagefolder")).rename_column("label", "labels")
    decoded, _ = decode_once(rows, adapter.inputs, augment=True, cache_root=str(tmp_path / "cache"))
    view = ExampleView(decoded, adapter.inputs, augment=True, seed=0)
    first = [view[i]["pixel_values"] for i in range(4)]
    torch.manual_seed(123)  # the global stream (dropout's) is neither used nor moved
    state = torch.get_rng_state()
    again = view.__getitems__([3, 1, 0, 2])  # another order, another batch: the same examples
    assert torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(first[i], again[j]["pixel_values"]) for j, i in enumerate([3, 1, 0, 2]))
    view.set_epoch(1)
    assert not all(torch.equal(first[i], view[i]["pixel_values"]) for i in range(4))  # a new epoch, new crops
    other_seed = ExampleView(decoded, adapter.inputs, augment=True, seed=1)
    assert not all(torch.equal(first[i], other_seed[i]["pixel_values"]) for i in range(4))


def test_worker_count_changes_nothing_and_resume_with_workers_is_exact(color_data, tmp_path):
    """Augmentation on: 0 and 2 DataLoader workers give the same run; killed and resumed with workers,
    the run ends exactly where the uninterrupted one ends."""
    train_dir, val_dir = color_data
    common = {
        "strategy": "full",
        "train.epochs": 2,
        "train.checkpoint_every_steps": 2,
        "train.save_total_limit": 20,
        **AUGMENTED,
    }
    cache = tmp_path / "cache"
    inline = _run(train_dir, val_dir, tmp_path / "w0", cache, **common, **{"data.num_workers": 0})
    workers = _run(train_dir, val_dir, tmp_path / "w2", cache, **common, **{"data.num_workers": 2})
    assert _losses(inline) == _losses(workers)
    assert _same_weights(inline, workers)

    crashed = tmp_path / "crashed"  # keep only the checkpoints up to step 8 (epoch 0 has 6 steps)
    shutil.copytree(tmp_path / "w2" / "checkpoints", crashed / "checkpoints")
    for checkpoint in (crashed / "checkpoints").glob("step_*"):
        if int(checkpoint.name.split("_")[1]) > 8:
            shutil.rmtree(checkpoint)
    extra = {"data.num_workers": 2, "train.resume_from_checkpoint": "latest"}
    resumed = _run(train_dir, val_dir, crashed, cache, **common, **extra)
    assert resumed.fit.global_step == workers.fit.global_step
    assert _losses(resumed) == _losses(workers)
    assert _same_weights(resumed, workers)


def test_loader_workers_follow_the_spare_cores():
    assert loader_settings(None, torch.device("cpu"), 1).num_workers == 0  # the model uses every core
    accelerated = loader_settings(None, torch.device("cuda"), 1)
    assert accelerated.pin_memory and accelerated.persistent_workers == (accelerated.num_workers > 0)
    assert loader_settings(3, torch.device("cpu"), 1).num_workers == 3  # a setting always wins


# ------------------------------------------------------------------------------- decode once


def test_inputs_are_decoded_once_and_reused_by_the_next_run(color_data, tmp_path):
    train_dir, val_dir = color_data
    cache = tmp_path / "cache"
    first = _run(train_dir, val_dir, tmp_path / "a", cache, **{"train.epochs": 1})
    files = _cache(tmp_path, "inputs")
    assert len(files) == 2  # the training view (augmentation source) and the evaluation view
    second = _run(train_dir, val_dir, tmp_path / "b", cache, **{"train.epochs": 1})
    assert _cache(tmp_path, "inputs") == files and all(f.stat().st_mtime > 0 for f in files)
    assert _losses(first) == _losses(second)
    _run(train_dir, val_dir, tmp_path / "c", cache, **{"train.epochs": 1, "data.image_size": 40})
    assert len(_cache(tmp_path, "inputs")) == 4  # another size is another preprocessing: new entries


def test_decode_cache_off_gives_the_same_run(color_data, tmp_path):
    train_dir, val_dir = color_data
    common = {"train.epochs": 1, **AUGMENTED}
    cached = _run(train_dir, val_dir, tmp_path / "a", tmp_path / "c1", **common)
    lazy = _run(train_dir, val_dir, tmp_path / "b", tmp_path / "c2", **common, **{"data.decode_cache": False})
    assert not _cache(tmp_path / "c2", "inputs") or not (tmp_path / "c2" / "inputs").exists()
    assert _losses(cached) == _losses(lazy) and _same_weights(cached, lazy)


# ---------------------------------------------------------------------------- cached probing


def test_cached_probe_equals_the_uncached_probe(color_data, tmp_path, caplog):
    train_dir, val_dir = color_data
    # One view, no weight-decay search: the uncached probe has neither (both need cached features).
    common = {"strategy": "linear_probe", "train.epochs": 4, "train.lr": 0.05, "linear_probe.views": 1}
    common["linear_probe.search"] = False
    with caplog.at_level(logging.INFO, logger="hf_transfer"):
        cached = _run(train_dir, val_dir, tmp_path / "cached", tmp_path / "cache", **common)
    assert "cached backbone features" in caplog.text
    assert len(_cache(tmp_path, "features")) == 2  # training and validation features
    uncached = _run(
        train_dir, val_dir, tmp_path / "plain", tmp_path / "cache", **common, **{"linear_probe.cache_features": False}
    )
    assert cached.metrics["accuracy"] == uncached.metrics["accuracy"]
    assert _losses(cached) == pytest.approx(_losses(uncached), rel=1e-4)
    assert _same_weights(cached, uncached, atol=1e-5)  # backbone untouched, same head


def test_feature_cache_is_reused_and_keyed_by_weights_preprocessing_and_data(color_data, tmp_path, caplog):
    train_dir, val_dir = color_data
    cache = tmp_path / "cache"
    probe = {"strategy": "linear_probe", "train.epochs": 2, "linear_probe.views": 1}  # a file per view and data set
    _run(train_dir, val_dir, tmp_path / "a", cache, **probe)
    files = _cache(tmp_path, "features")
    with caplog.at_level(logging.INFO, logger="hf_transfer"):
        _run(train_dir, val_dir, tmp_path / "b", cache, **{**probe, "train.epochs": 5, "train.lr": 0.1})
    assert _cache(tmp_path, "features") == files and "Cached training features" in caplog.text
    _run(train_dir, val_dir, tmp_path / "c", cache, **probe, **{"data.image_size": 40})  # preprocessing
    assert len(_cache(tmp_path, "features")) == 4
    _run(train_dir, val_dir, tmp_path / "d", cache, **probe, **{"train.seed": 1})  # other random weights
    assert len(_cache(tmp_path, "features")) == 6
    _run(train_dir, val_dir, tmp_path / "e", cache, **probe, **{"data.max_train_samples": 30})  # other data
    assert len(_cache(tmp_path, "features")) == 7  # a new training set; the validation features are reused


def test_augmentation_asked_for_turns_the_feature_cache_off(color_data, tmp_path, caplog):
    train_dir, val_dir = color_data
    with caplog.at_level(logging.INFO, logger="hf_transfer"):
        _run(train_dir, val_dir, tmp_path / "a", tmp_path / "cache", strategy="linear_probe", **AUGMENTED)
    assert "not cached: data.augment is on" in caplog.text
    assert not (tmp_path / "cache" / "features").exists()


# ------------------------------------------------------------------------ cadence and guards


def test_evaluation_cadence_and_loss_logging(color_data, tmp_path):
    train_dir, val_dir = color_data
    extra = {"train.epochs": 2, "train.eval_every_steps": 4, "train.logging_steps": 3}
    result = _run(train_dir, val_dir, tmp_path / "a", tmp_path / "cache", **extra)
    steps = [h["step"] for h in result.metrics["history"]]
    assert steps == [4, 8, 12]  # 6 steps per epoch: every 4 steps, and the last one
    logged = [step for step, _ in result.fit.train_loss]
    # Every 3 steps, and before each evaluation (the loss is checked before weights may become the best).
    assert logged == [3, 4, 6, 8, 9, 12] and all(isinstance(loss, float) for _, loss in result.fit.train_loss)


def test_a_loss_that_does_not_move_warns_with_the_knob_to_turn(color_data, tmp_path, caplog):
    train_dir, val_dir = color_data
    with caplog.at_level(logging.WARNING):
        _run(train_dir, val_dir, tmp_path / "a", tmp_path / "cache", **{"train.lr": 1e-9, "train.logging_steps": 2})
    assert "has not moved in the first epoch" in caplog.text and "Lower train.lr" in caplog.text


def test_a_learning_run_does_not_warn(color_data, tmp_path, caplog):
    train_dir, val_dir = color_data
    with caplog.at_level(logging.WARNING):
        result = _run(train_dir, val_dir, tmp_path / "a", tmp_path / "cache", **{"train.logging_steps": 2})
    assert "has not moved" not in caplog.text
    assert result.metrics["warnings"] == [] and "**Warning:**" not in (tmp_path / "a" / "README.md").read_text()


def _report(accuracy: float, supports: dict[str, int]) -> dict:
    return {"metrics": {"accuracy": accuracy}, "per_class": {k: {"support": n} for k, n in supports.items()}}


def test_a_model_no_better_than_the_majority_class_is_named():
    warning = learned_nothing(_report(0.6, {"cat": 6, "dog": 3, "owl": 1}))
    assert "always answering 'cat'" in warning and "accuracy 0.6000 vs 0.6000" in warning
    assert "train.lr" in warning
    assert learned_nothing(_report(0.7, {"cat": 6, "dog": 3, "owl": 1})) is None
    assert learned_nothing(_report(1.0, {"cat": 6, "dog": 0})) is None  # one class present: nothing to compare


def test_a_run_that_learned_nothing_says_so_in_metrics_card_and_log(color_data, tmp_path, caplog, monkeypatch):
    train_module = importlib.import_module("hf_transfer.train")  # the module: hf_transfer.train is the function
    seen = []
    monkeypatch.setattr(train_module, "learned_nothing", lambda report: seen.append(report) or "Not <learned>.")
    train_dir, val_dir = color_data
    with caplog.at_level(logging.WARNING):
        _run(train_dir, val_dir, tmp_path / "a", tmp_path / "cache", **{"train.epochs": 1})
    assert seen and seen[0]["num_examples"] == 18  # judged on the best model's validation report
    assert json.loads((tmp_path / "a" / "metrics.json").read_text())["warnings"] == ["Not <learned>."]
    assert "> **Warning:** Not &lt;learned&gt;." in (tmp_path / "a" / "README.md").read_text()
    assert "Not <learned>." in caplog.text


def test_gradient_checkpointing_changes_memory_not_results(color_data, tmp_path):
    train_dir, val_dir = color_data
    common = {"model": "test_vit", "train.epochs": 1}
    plain = _run(train_dir, val_dir, tmp_path / "a", tmp_path / "cache", **common)
    checkpointed = _run(
        train_dir, val_dir, tmp_path / "b", tmp_path / "cache", **common, **{"train.gradient_checkpointing": True}
    )
    assert _losses(plain) == pytest.approx(_losses(checkpointed), rel=1e-5)
    assert _same_weights(plain, checkpointed, atol=1e-5)


def test_lora_default_targets_of_a_cnn_are_its_pointwise_layers():
    config = load_config(None, ["task=image-classification", "model=test_efficientnet", "pretrained=false"])
    adapter = ADAPTERS.get(config.task)(config)
    model = adapter.models.build_model(["a", "b"])
    targets = adapter.models.lora_target_modules(model)
    assert targets
    for name in targets:
        module = model.get_submodule(name)
        assert isinstance(module, torch.nn.Linear) or (module.kernel_size == (1, 1) and module.groups == 1), name
    assert "conv_stem" not in targets and not any(t.startswith("classifier") for t in targets)


@pytest.mark.slow
def test_compile_trains_like_eager(color_data, tmp_path):
    """torch.compile (inductor, minutes of compilation on CPU) trains the same model; fused kernels round
    differently, and a few steps at a high learning rate carry that, so closeness, not equality."""
    train_dir, val_dir = color_data
    common = {"train.epochs": 2, "train.lr": 0.003}
    plain = _run(train_dir, val_dir, tmp_path / "a", tmp_path / "cache", **common)
    compiled = _run(train_dir, val_dir, tmp_path / "b", tmp_path / "cache", **common, **{"train.compile": True})
    assert _losses(compiled) == pytest.approx(_losses(plain), rel=0.05)
    assert _losses(compiled)[-1] < _losses(compiled)[0]


def test_the_log_says_how_many_examples_the_dropped_ragged_batch_leaves_out(color_data, tmp_path, caplog):
    """Training drops the ragged last batch (BatchNorm); on a small set that is a share of the data and of the
    steps (measured on the suite's intents: 105 steps instead of 120), so the log says it, with a batch size
    that uses every example when one is near the asked one; a batch size that divides the set says nothing."""
    train_dir, val_dir = color_data  # 49 training images (16 per class and a grayscale one)
    assert len(list(train_dir.rglob("*.png"))) == 49
    for batch, out in ((10, "ragged"), (7, "even")):
        caplog.clear()
        extra = {"train.batch_size": batch, "train.epochs": 1, "train.max_steps": 1}
        with caplog.at_level(logging.INFO, logger="hf_transfer"):
            train(load_config(None, tiny_image_overrides(train_dir, val_dir, tmp_path / out, **extra)))
        said = [r.getMessage() for r in caplog.records if "sit out each epoch" in r.getMessage()]
        if batch == 10:
            assert said and said[0].startswith("9 of 49 training examples sit out each epoch"), said
            assert "train.batch_size=7 uses all of them" in said[0]
        else:
            assert not said, said


def test_no_batch_size_hint_when_none_near_the_asked_one_divides_the_set(caplog):
    from hf_transfer.data.loaders import _say_left_out

    with caplog.at_level(logging.INFO, logger="hf_transfer"):
        _say_left_out(97, 6, 16, 1)  # 97 is prime: 1 example out, no batch size from 16 down to 9 divides it
    (message,) = [r.getMessage() for r in caplog.records]
    assert message.startswith("1 of 97 training examples sit out") and "train.batch_size=" not in message
