"""The cached linear probe's views and its regularisation search: K views of each training example are cached
(one backbone pass each), each epoch draws one per example as a function of (seed, epoch, index), validation
sees the evaluation view alone; the weight decay is chosen by cross-validation on the training features only,
recorded in config.yaml, metrics.json and the card, and switching the search off is the probe of before."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
import timm.models.efficientnet
import torch
import yaml
from conftest import tiny_image_overrides

from hf_transfer import ADAPTERS, load_config, train
from hf_transfer.adapters.base import EVALUATION_VIEW
from hf_transfer.catalog.specs import write_tiny_wav2vec2
from hf_transfer.config.schema import TrainConfig
from hf_transfer.core.rng import view_of
from hf_transfer.methods.features import FeatureJob, FeatureView, cached_probe
from hf_transfer.methods.probe_search import ProbeSet, SearchPoint, search_regularisation

PROBE = {"strategy": "linear_probe", "train.lr": 0.05, "data.hflip": 0.5, "data.crop_scale": "[0.6, 1.0]"}


def _run(train_dir, val_dir, out: Path, **extra):
    overrides = tiny_image_overrides(train_dir, val_dir, out, **{**PROBE, "data.cache_dir": str(out.parent / "cache")})
    return train(load_config(None, overrides + [f"{k}={v}" for k, v in extra.items()]))


def _weights(result) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in result.model.state_dict().items()}


@pytest.fixture
def examples_seen(monkeypatch) -> list[int]:
    """How many examples went through the backbone (timm EfficientNet's forward_features), call by call."""
    seen: list[int] = []
    original = timm.models.efficientnet.EfficientNet.forward_features

    def counting(self, x):
        seen.append(x.shape[0])
        return original(self, x)

    monkeypatch.setattr(timm.models.efficientnet.EfficientNet, "forward_features", counting)
    return seen


# --------------------------------------------------------------------------------------------------- views


def test_the_cache_holds_k_views_and_the_backbone_runs_k_passes(color_data, tmp_path, examples_seen, caplog):
    train_dir, val_dir = color_data
    with caplog.at_level(logging.INFO):
        first = _run(train_dir, val_dir, tmp_path / "a", **{"linear_probe.views": 3})
    n_train, n_val = len(list(train_dir.rglob("*.png"))), len(list(val_dir.rglob("*.png")))
    # 3 passes over the training set, 1 over validation (and 2 rows that show the head takes one vector each)
    assert sum(examples_seen) == 3 * n_train + n_val + 2
    assert "3 view(s) of each training example: evaluation, mirrored, crop 1" in caplog.text
    features = sorted((tmp_path / "cache" / "features").glob("*.safetensors"))
    assert len(features) == 4  # one file per view of the training set, one for validation
    examples_seen.clear()
    again = _run(train_dir, val_dir, tmp_path / "b", **{"linear_probe.views": 3})
    assert examples_seen == [2] and again.metrics["accuracy"] == first.metrics["accuracy"]  # all from the cache
    examples_seen.clear()
    _run(train_dir, val_dir, tmp_path / "c", **{"linear_probe.views": 3, "data.crop_scale": "[0.9, 1.0]"})
    assert sum(examples_seen) == n_train + 2  # another crop recipe: the crop view again, nothing else


def test_views_follow_the_flip_setting_and_the_modality(color_data, tmp_path):
    train_dir, val_dir = color_data
    config = load_config(None, tiny_image_overrides(train_dir, val_dir, tmp_path / "o", **{"data.hflip": 0}))
    adapter = ADAPTERS.get(config.task)(config)
    adapter.models.build_model(["blue", "green", "red"])
    assert [v.name for v in adapter.inputs.probe_views(3)] == ["evaluation", "crop 1", "crop 2"]  # digits: no mirror
    assert adapter.inputs.probe_views(None) == [EVALUATION_VIEW]  # the default: no crops (measured worse)
    flips = load_config(None, tiny_image_overrides(train_dir, val_dir, tmp_path / "o", **{"data.hflip": 0.5}))
    flipping = ADAPTERS.get(flips.task)(flips)
    flipping.models.build_model(["blue", "green", "red"])
    assert [v.name for v in flipping.inputs.probe_views(None)] == ["evaluation", "mirrored"]  # the default with flips
    assert [v.name for v in flipping.inputs.probe_views(3)] == ["evaluation", "mirrored", "crop 1"]
    assert ADAPTERS.get("text-classification")(config).inputs.probe_views(4) == [EVALUATION_VIEW]  # text: one view
    tiny = write_tiny_wav2vec2(tmp_path / "w2v2", hidden_size=32)
    audio = ADAPTERS.get("audio-classification")(
        load_config(None, ["task=audio-classification", f"model={tiny}", "pretrained=false"])
    )
    audio.models.build_model(["a", "b"])
    assert [v.name for v in audio.inputs.probe_views(3)] == ["evaluation", "window 1", "window 2"]
    assert audio.inputs.probe_views(None) == [EVALUATION_VIEW]  # windows only when asked for (not measured)


def test_the_mirrored_view_is_the_evaluation_view_flipped(color_data, tmp_path):
    train_dir, val_dir = color_data
    config = load_config(None, tiny_image_overrides(train_dir, val_dir, tmp_path / "o", **PROBE))
    adapter = ADAPTERS.get(config.task)(config)
    adapter.models.build_model(["blue", "green", "red"])
    mirrored = adapter.inputs.probe_views(2)[1]
    example = adapter.inputs.decode({"image": [str(next(train_dir.rglob("*.png")))]}, augment=False)
    example = {k: v[0] for k, v in example.items()}
    evaluation = adapter.inputs.transform(example, False, None)["pixel_values"]
    assert torch.equal(adapter.inputs.view_inputs(example, mirrored, seed=7)["pixel_values"], evaluation.flip(-1))


def test_epochs_draw_views_deterministically_whatever_the_batch():
    count, views = 64, 4
    features = torch.arange(views).float().view(1, views, 1).expand(count, views, 1).contiguous()  # value = view
    dataset = FeatureView(features, torch.zeros(count, dtype=torch.long), seed=3, views=True)
    drawn = {}
    for epoch in range(3):
        dataset.set_epoch(epoch)
        drawn[epoch] = dataset.__getitems__(list(range(count)))["features"].flatten().long().tolist()
        backwards = dataset.__getitems__(list(reversed(range(count))))["features"].flatten().long().tolist()
        assert backwards == drawn[epoch][::-1]  # a function of the index, not of the batch
        assert drawn[epoch] == [view_of(3, epoch, i, views) for i in range(count)]
        assert set(drawn[epoch]) == set(range(views))  # every view is drawn
    assert drawn[0] != drawn[1] != drawn[2]  # each epoch draws anew
    other_seed = FeatureView(features, torch.zeros(count, dtype=torch.long), seed=4, views=True)
    assert other_seed.__getitems__(list(range(count)))["features"].flatten().long().tolist() != drawn[0]


def test_validation_uses_only_the_evaluation_view(color_data, tmp_path):
    train_dir, val_dir = color_data
    config = load_config(None, tiny_image_overrides(train_dir, val_dir, tmp_path / "o", **PROBE))
    from hf_transfer.data.splits import load_splits
    from hf_transfer.engine.loop import Engine

    adapter = ADAPTERS.get(config.task)(config)
    splits = load_splits(config, adapter.inputs)
    model = adapter.models.build_model(splits.labels)
    engine = Engine(config.train, tmp_path / "o")
    job = FeatureJob(model, adapter, engine, 8, str(tmp_path / "c"))
    try:
        one = cached_probe(job, splits.train, splits.validation, views=1)
        three = cached_probe(job, splits.train, splits.validation, views=3)
    finally:
        engine.close()
    assert one.views == ["evaluation"] and three.views == ["evaluation", "mirrored", "crop 1"]
    assert torch.equal(three.data.eval.features, one.data.eval.features) and not three.data.eval.views
    assert torch.equal(three.train_features[:, 0], one.train_features[:, 0])  # view 0: the evaluation view
    assert not torch.allclose(three.train_features[:, 1], three.train_features[:, 0])


def test_a_resumed_probe_with_views_equals_the_uninterrupted_one(color_data, tmp_path):
    train_dir, val_dir = color_data
    common = {
        "linear_probe.views": 3,
        "train.epochs": 3,
        "train.checkpoint_every_steps": 2,
        "train.save_total_limit": 20,
    }
    full = _run(train_dir, val_dir, tmp_path / "a", **common)
    crashed = tmp_path / "b"
    shutil.copytree(tmp_path / "a" / "checkpoints", crashed / "checkpoints")
    for checkpoint in (crashed / "checkpoints").glob("step_*"):
        if int(checkpoint.name.split("_")[1]) > 8:  # 6 steps per epoch: killed in the middle of epoch 1
            shutil.rmtree(checkpoint)
    resumed = _run(train_dir, val_dir, crashed, **common, **{"train.resume_from_checkpoint": "latest"})
    assert [h["loss"] for h in resumed.metrics["history"]] == [h["loss"] for h in full.metrics["history"]]
    a, b = _weights(full), _weights(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)
    # Another number of views is another run: its checkpoints are not resumed.
    from hf_transfer.core.errors import RunDirError

    other = tmp_path / "c"
    shutil.copytree(tmp_path / "a" / "checkpoints", other / "checkpoints")
    with pytest.raises(RunDirError, match="probe_views"):
        _run(train_dir, val_dir, other, **{**common, "linear_probe.views": 2, "train.resume_from_checkpoint": "latest"})


# -------------------------------------------------------------------------------------------------- search


def test_the_search_never_reads_the_validation_set(color_data, tmp_path):
    """Validation labels permuted (red <-> green folders): the run's validation score changes, the choice does not."""
    train_dir, val_dir = color_data
    swapped = tmp_path / "swapped"
    shutil.copytree(val_dir, swapped)
    (swapped / "red").rename(swapped / "tmp")
    (swapped / "green").rename(swapped / "red")
    (swapped / "tmp").rename(swapped / "green")
    plain = _run(train_dir, val_dir, tmp_path / "a")
    permuted = _run(train_dir, swapped, tmp_path / "b")
    assert plain.metrics["accuracy"] != permuted.metrics["accuracy"]
    choice = {k: v for k, v in plain.metrics["probe_search"].items() if k != "seconds"}
    assert choice == {k: v for k, v in permuted.metrics["probe_search"].items() if k != "seconds"}


def test_the_choice_is_recorded_in_the_log_config_metrics_and_card(color_data, tmp_path, caplog):
    train_dir, val_dir = color_data
    with caplog.at_level(logging.INFO):
        result = _run(train_dir, val_dir, tmp_path / "a", **{"linear_probe.search_weight_decay": "[0.01,1,10]"})
    search = result.metrics["probe_search"]
    chosen = search["weight_decay"]
    assert chosen in (0.01, 1, 10) and [s["weight_decay"] for s in search["scores"]] == [0.01, 1, 10]
    assert search["folds"] == 5 and search["examples"] == 49
    assert "Probe regularisation" in caplog.text and f"weight decay {chosen:g}" in caplog.text
    saved = yaml.safe_load((tmp_path / "a" / "config.yaml").read_text())
    assert saved["linear_probe"]["weight_decay"] == chosen
    assert json.loads((tmp_path / "a" / "metrics.json").read_text())["probe_search"] == search
    card = (tmp_path / "a" / "README.md").read_text()
    assert f"**Probe regularisation:** weight decay {chosen:g}, lr 0.05, chosen by 5-fold cross-validation" in card
    # The recorded config runs again without a search, to the same model.
    caplog.clear()
    with caplog.at_level(logging.INFO):
        again = train(
            load_config(tmp_path / "a" / "config.yaml", [f"output_dir={tmp_path / 'again'}", "train.log_with=[]"])
        )
    assert "Probe regularisation" not in caplog.text and "probe_search" not in again.metrics
    assert all(torch.equal(v, _weights(again)[k]) for k, v in _weights(result).items())


def test_search_off_is_the_probe_of_before_and_a_grid_of_one_is_no_search(color_data, tmp_path):
    train_dir, val_dir = color_data
    off = _run(train_dir, val_dir, tmp_path / "off", **{"linear_probe.search": False, "train.weight_decay": 0.3})
    one = _run(train_dir, val_dir, tmp_path / "one", **{"linear_probe.search_weight_decay": "[0.3]"})
    assert "probe_search" not in off.metrics and "probe_search" not in one.metrics
    assert off.metrics["history"] == one.metrics["history"]
    assert all(torch.equal(v, _weights(one)[k]) for k, v in _weights(off).items())
    searched = _run(train_dir, val_dir, tmp_path / "on", **{"linear_probe.search_weight_decay": "[0.3,10]"})
    assert searched.metrics["probe_search"]["weight_decay"] in (0.3, 10)


def test_the_search_copes_with_few_shot_data_and_chooses_by_held_out_accuracy():
    """5 and 2 examples per class: stratified folds (5, then 2); a class with one example still folds in 2;
    the point chosen has the best held-out accuracy; the head's own weights are untouched; 3 examples: no search."""
    torch.manual_seed(0)
    centres = torch.randn(3, 16) * 3
    head = torch.nn.Linear(16, 3)
    start = {k: v.clone() for k, v in head.state_dict().items()}
    settings = TrainConfig(epochs=5, batch_size=4, lr=0.05)
    grid = [SearchPoint(0.0, 0.05), SearchPoint(10.0, 0.05)]
    for per_class, folds in ((5, 5), (2, 2)):
        labels = torch.arange(3).repeat_interleave(per_class)
        features = (centres[labels] + torch.randn(len(labels), 16)).unsqueeze(1)
        result = search_regularisation(head, ProbeSet(features, labels), grid, 5, settings, 4)
        assert result.folds == folds and result.examples == len(labels)
        assert [s["weight_decay"] for s in result.scores] == [0.0, 10.0]
        best = max(s["accuracy"] for s in result.scores)
        assert next(s for s in result.scores if s["weight_decay"] == result.chosen.weight_decay)["accuracy"] == best
    labels = torch.tensor([0, 0, 0, 1, 1, 1, 2])
    assert search_regularisation(head, ProbeSet(torch.randn(7, 1, 16), labels), grid, 5, settings, 4).folds == 2
    assert all(torch.equal(v, head.state_dict()[k]) for k, v in start.items())
    assert (
        search_regularisation(head, ProbeSet(torch.randn(3, 1, 16), torch.tensor([0, 1, 2])), grid, 5, settings, 4)
        is None
    )


def test_each_model_of_the_search_is_the_head_the_engines_recipe_trains():
    """One (weight decay, fold) model of the batched search equals the same head trained alone with torch's AdamW
    (decay on the weight, not the bias), the warm-up and cosine schedule, gradient clipping, label smoothing and
    the views drawn per epoch: the search compares what the real fit would do."""
    import copy

    import torch.nn.functional as F

    from hf_transfer.methods.probe_search import _fold_plan, _train, _view_table

    torch.manual_seed(0)
    features, labels = torch.randn(40, 2, 8), torch.arange(4).repeat(10)
    head = torch.nn.Linear(8, 4)
    settings = TrainConfig(epochs=4, batch_size=4, lr=0.05, max_grad_norm=0.5, label_smoothing=0.1)
    grid = [SearchPoint(0.0, 0.05), SearchPoint(3.0, 0.02)]
    folds = [torch.arange(0, 40, 2), torch.arange(1, 40, 2)]
    plans = [_fold_plan(indices, 4, settings, 40, f) for f, indices in enumerate(folds)]
    views = _view_table(torch.arange(40), 2, 4, settings.seed)
    models = _train(head, ProbeSet(features, labels), grid, plans, settings, views)

    alone = copy.deepcopy(head)
    groups = [{"params": [alone.weight], "weight_decay": 3.0}, {"params": [alone.bias], "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW(groups, lr=0.02)
    for rows, epoch, factor in plans[1]:  # point 1 (weight decay 3, lr 0.02), fold 1: model 1 * 2 + 1
        for group in optimizer.param_groups:
            group["lr"] = 0.02 * factor
        loss = F.cross_entropy(alone(features[rows, views[epoch, rows]]), labels[rows], label_smoothing=0.1)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(alone.parameters(), 0.5)
        optimizer.step()
    assert len(plans[1]) == 4 * (20 // 4) and plans[1][0][2] == 0.0  # whole batches; the warm-up starts at 0
    assert torch.allclose(models.params["weight"][3], alone.weight, atol=1e-6)
    assert torch.allclose(models.params["bias"][3], alone.bias, atol=1e-6)
    assert not torch.allclose(models.params["weight"][1], alone.weight, atol=1e-3)  # another point differs
