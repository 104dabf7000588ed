"""LP-FT (a probe, then fine-tuning from its head) and layer-wise learning-rate decay."""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import timm
import torch
from conftest import changed_tensors, initial_model, tiny_image_overrides

from hf_transfer import ADAPTERS, load_config, train
from hf_transfer.engine.train_mode import set_train_mode
from hf_transfer.methods.layer_decay import param_groups
from hf_transfer.methods.strategies import STRATEGIES
from hf_transfer.train import resolved

LP_FT = {"strategy": "lp_ft", "lp_ft.probe_epochs": 2, "train.epochs": 2, "train.lr": 0.01}


def _config(train_dir, val_dir, out, **extra):
    return load_config(None, tiny_image_overrides(train_dir, val_dir, out, **extra))


def _stages(result) -> list[str]:
    return [h["stage"] for h in result.metrics["history"]]


def _evaluations(metrics: dict) -> list[tuple]:
    return [(h["stage"], h["epoch"], h["step"], round(h["loss"], 5)) for h in metrics["history"]]


# ------------------------------------------------------------------------------------- LP-FT


def test_lp_ft_probes_then_fine_tunes_from_the_probed_head(color_data, tmp_path, caplog):
    train_dir, val_dir = color_data
    with caplog.at_level(logging.INFO, logger="hf_transfer"):
        result = train(_config(train_dir, val_dir, tmp_path / "run", **LP_FT))
    assert _stages(result) == ["probe", "probe", "fine-tune", "fine-tune"]
    probe, tune = result.metrics["stages"]
    assert (probe["strategy"], probe["lr"], tune["strategy"], tune["lr"]) == ("linear_probe", 0.01, "full", 0.01)
    assert "Stage 'probe'" in caplog.text and "Stage 'fine-tune'" in caplog.text
    assert "cached backbone features" in caplog.text  # the probe stage trains on cached features
    # The fine-tuning stage starts from the probed head: with a learning rate too small to move anything,
    # it ends where the probe ended (a new random head would be at chance, loss ln 3 = 1.1).
    # (A ViT: LayerNorm has no running statistics that full fine-tuning would move even at lr 1e-12.)
    frozen = train(_config(train_dir, val_dir, tmp_path / "still", **{**LP_FT, "train.lr": 1e-12, "model": "test_vit"}))
    probe_end, tune_end = frozen.metrics["stages"]
    assert tune_end["best_loss"] == pytest.approx(probe_end["best_loss"], rel=1e-3) and tune_end["best_loss"] < 0.9
    # Every parameter trained in the end (the backbone in stage 2), and the run is a normal artifact.
    assert json.loads((tmp_path / "run" / "run_info.json").read_text())["strategy"] == "lp_ft"
    reloaded = timm.create_model(f"local-dir:{tmp_path / 'run'}", pretrained=True)
    assert reloaded.num_classes == 3


def test_lp_ft_fine_tuning_keeps_the_normalisation_statistics_its_probe_saw(color_data, tmp_path):
    """A BatchNorm backbone: the probe's head was fitted on features normalised with the pretrained running
    statistics; the fine-tuning stage keeps them (train.freeze_norm_statistics, on for lp_ft), so with a
    learning rate too small to move a weight it ends where the probe ended. Updated from the fine-tuning
    batches instead, they shift every feature under the probed head."""
    train_dir, val_dir = color_data
    # pretrained: false here (no weights offline), so the setting is given; resolved() below shows its default.
    still = {**LP_FT, "train.lr": 1e-12, "model": "test_efficientnet", "train.freeze_norm_statistics": True}
    result = train(_config(train_dir, val_dir, tmp_path / "kept", **still))
    probe_end, tune_end = result.metrics["stages"]
    assert tune_end["best_loss"] == pytest.approx(probe_end["best_loss"], rel=1e-4)
    assert load_config(tmp_path / "kept" / "config.yaml").train.freeze_norm_statistics is True
    built = _config(train_dir, val_dir, tmp_path / "x", **{**still, "strategy": "full"})  # the same model, built
    start = dict(initial_model(built, result.labels).named_buffers())
    buffers = dict(result.model.named_buffers())
    running = [name for name in buffers if name.endswith(("running_mean", "running_var"))]
    assert running and all(torch.equal(buffers[name], start[name]) for name in running)

    moved = train(_config(train_dir, val_dir, tmp_path / "moved", **{**still, "train.freeze_norm_statistics": False}))
    assert not all(torch.equal(dict(moved.model.named_buffers())[name], start[name]) for name in running)
    probe_end, tune_end = moved.metrics["stages"]
    assert [h["loss"] for h in moved.metrics["history"] if h["stage"] == "fine-tune"] != [probe_end["best_loss"]] * 2
    # Auto: on for lp_ft and full from pretrained weights; off from scratch, and for the frozen-backbone strategies.
    assert load_config(None, ["strategy=lp_ft"]).train.freeze_norm_statistics is None
    for overrides, on in [
        (["strategy=lp_ft"], True),
        (["strategy=full"], True),
        (["strategy=full", "pretrained=false"], False),
        (["strategy=lora"], False),
        (["strategy=linear_probe"], False),
    ]:
        assert resolved(load_config(None, overrides)).train.freeze_norm_statistics is on, overrides


def test_full_fine_tuning_keeps_the_pretrained_normalisation_statistics_by_default(color_data, tmp_path):
    """A few-shot set trains in small batches (train.batch_size auto), whose statistics would replace the
    pretrained ones: full fine-tuning keeps them (its weights, BatchNorm's scale and shift included, train)
    unless train.freeze_norm_statistics=false. (pretrained: false here, no weights offline: the setting is
    given, as its default for pretrained weights; see the test above for the default.)"""
    train_dir, val_dir = color_data
    common = {"model": "test_efficientnet", "train.epochs": 1, "train.lr": 0.01, "train.freeze_norm_statistics": True}
    config = _config(train_dir, val_dir, tmp_path / "kept", **common)
    kept = changed_tensors(config, train(config))
    assert load_config(tmp_path / "kept" / "config.yaml").train.freeze_norm_statistics is True
    assert kept and not any(name.endswith(("running_mean", "running_var")) for name in kept)
    assert any(name.startswith("bn1.") and name.endswith(".weight") for name in kept)  # the scale still trains
    config = _config(train_dir, val_dir, tmp_path / "moved", **{**common, "train.freeze_norm_statistics": False})
    assert any(name.endswith("running_mean") for name in changed_tensors(config, train(config)))


def test_freeze_norm_statistics_puts_only_the_layers_with_running_statistics_in_eval_mode():
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Dropout(0.5), torch.nn.GroupNorm(2, 4)
    )
    set_train_mode(model, freeze_norm_statistics=True)
    assert [m.training for m in model] == [True, False, True, True]
    before = model[1].running_mean.clone()
    model(torch.randn(2, 3, 8, 8)).sum().backward()
    assert torch.equal(model[1].running_mean, before) and model[1].weight.grad is not None  # scale still trains
    set_train_mode(model)
    assert all(m.training for m in model)


def test_lp_ft_then_lora_saves_a_peft_adapter(color_data, tmp_path):
    train_dir, val_dir = color_data
    result = train(_config(train_dir, val_dir, tmp_path / "run", **LP_FT, **{"lp_ft.then": "lora"}))
    assert (tmp_path / "run" / "adapter_config.json").is_file()
    assert result.metrics["stages"][1]["strategy"] == "lora" and _stages(result)[-1] == "fine-tune"


@pytest.mark.parametrize("stage", ["probe", "fine-tune"])
def test_lp_ft_resumes_in_either_stage(color_data, tmp_path, stage):
    """Checkpoints every 2 steps, numbered across both stages. A crash after the first two checkpoints of
    `stage` resumes to the uninterrupted end state."""
    train_dir, val_dir = color_data
    common = {**LP_FT, "train.checkpoint_every_steps": 2, "train.save_total_limit": 30}
    full = train(_config(train_dir, val_dir, tmp_path / "a", **common))
    checkpoints = sorted((tmp_path / "a" / "checkpoints").glob("step_*"))
    stages = [json.loads((c / "trainer_state.json").read_text())["identity"]["stage"] for c in checkpoints]
    assert stages.count("probe") >= 2 and stages.count("fine-tune") >= 2
    crashed = tmp_path / "b"
    for checkpoint in checkpoints[: stages.index(stage) + 2]:
        shutil.copytree(checkpoint, crashed / "checkpoints" / checkpoint.name)
    resumed = train(_config(train_dir, val_dir, crashed, **common, **{"train.resume_from_checkpoint": "latest"}))
    assert [round(h["loss"], 5) for h in resumed.fit.history] == [round(h["loss"], 5) for h in full.fit.history]
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-6) for k in a)
    # What the run reports covers both stages, the one finished before the crash included.
    saved = json.loads((crashed / "metrics.json").read_text())
    assert _evaluations(saved) == _evaluations(full.metrics) and _stages(resumed) == _stages(full)
    assert [s["stage"] for s in saved["stages"]] == ["probe", "fine-tune"]
    for ours, theirs in zip(saved["stages"], full.metrics["stages"], strict=True):
        assert ours["best_loss"] == pytest.approx(theirs["best_loss"], abs=1e-5)
    assert saved["feature_runtime"] is not None  # the probe stage's backbone pass


# ------------------------------------------------------------------------ layer-wise decay


@pytest.mark.parametrize("model_name", ["test_vit", "test_efficientnet"])
def test_layer_decay_of_timm_models_is_timms_own_grouping(model_name):
    from timm.optim import param_groups_layer_decay

    config = load_config(None, ["task=image-classification", f"model={model_name}", "pretrained=false"])
    adapter = ADAPTERS.get(config.task)(config)
    model = adapter.models.build_model(["a", "b", "c"])
    groups = param_groups(model, adapter.models.layer_ids(model), lr=1.0, weight_decay=0.0, decay=0.5)
    ours = {id(p): group["lr"] for group in groups for p in group["params"]}
    theirs = {
        id(p): group["lr_scale"] for group in param_groups_layer_decay(model, layer_decay=0.5) for p in group["params"]
    }
    assert ours == pytest.approx(theirs)
    assert max(ours.values()) == 1.0 and min(ours.values()) < 0.1  # head full rate, stem decayed


def _tiny_bert(folder: Path):
    from transformers import BertConfig, BertForSequenceClassification

    model = BertForSequenceClassification(
        BertConfig(vocab_size=30, hidden_size=16, num_hidden_layers=3, num_attention_heads=2, intermediate_size=20)
    )
    model.save_pretrained(folder)
    return model


def test_layer_decay_of_a_transformers_encoder_and_its_lora_layers(tmp_path):
    from hf_transfer.adapters.text import TextClassificationAdapter

    model = _tiny_bert(tmp_path / "bert")
    config = load_config(None, ["task=text-classification", f"model={tmp_path / 'bert'}", "strategy=lora"])
    adapter = TextClassificationAdapter(config)
    ids, top = adapter.models.layer_ids(model)
    assert top == 4  # embeddings 0, encoder layers 1-3, pooler with the last layer, classifier 4
    assert ids["bert.embeddings.word_embeddings.weight"] == 0
    assert [ids[f"bert.encoder.layer.{i}.attention.self.query.weight"] for i in range(3)] == [1, 2, 3]
    assert ids["bert.pooler.dense.weight"] == 3 and ids["classifier.weight"] == 4
    lora = STRATEGIES.get("lora")(model, adapter.models, config)
    lora_ids, lora_top = adapter.models.layer_ids(lora)
    assert lora_top == 4
    name = "base_model.model.bert.encoder.layer.1.attention.self.query.lora_A.default.weight"
    assert lora_ids[name] == 2
    assert lora_ids["base_model.model.classifier.modules_to_save.default.weight"] == 4


def test_the_schedule_keeps_each_layers_share_of_the_learning_rate(color_data, tmp_path, caplog):
    """The engine's schedule scales each group's own lr: the layer ratios hold through warm-up and decay."""
    train_dir, val_dir = color_data
    extra = {"model": "test_vit", "train.layer_decay": 0.5, "train.epochs": 2}
    with caplog.at_level(logging.INFO, logger="hf_transfer"):
        result = train(_config(train_dir, val_dir, tmp_path / "run", **extra))
    assert "Layer-wise learning rates (decay 0.5" in caplog.text and "stem" in caplog.text and "head" in caplog.text
    assert result.metrics["history"][-1]["loss"] < result.metrics["history"][0]["loss"]
    config = _config(train_dir, val_dir, tmp_path / "unused", **extra)
    adapter = ADAPTERS.get(config.task)(config)
    model = adapter.models.build_model(["blue", "green", "red"])
    settings = replace(config.train, lr=0.01)
    groups = param_groups(model, adapter.models.layer_ids(model), 0.01, 0.0, 0.5)
    optimizer = torch.optim.AdamW(groups, lr=0.01)
    from hf_transfer.engine.loop import lr_schedule

    scheduler = lr_schedule(settings.scheduler, optimizer, warmup_steps=2, total_steps=10)
    start = [g["initial_lr"] for g in optimizer.param_groups]
    for _ in range(5):
        optimizer.step()
        scheduler.step()
    now = [g["lr"] for g in optimizer.param_groups]
    assert now[0] > 0 and [n / now[-1] for n in now] == pytest.approx([s / start[-1] for s in start])
