"""What a run chooses when only its data is given: the batch size and the number of epochs from the size of
the training set (train.batch_size / train.epochs auto), so that a few-shot set trains enough optimizer steps
instead of failing or stopping after a handful of them."""

from __future__ import annotations

import json
import logging

import pytest
import yaml
from conftest import as_overrides, write_color_images

from hf_transfer import load_config
from hf_transfer.cli import main
from hf_transfer.config.schema import AUTO_MAX_BATCH, auto_batch_size, auto_epochs, describe_fields
from hf_transfer.core.errors import ConfigError
from hf_transfer.core.rundir import RunDir
from hf_transfer.data.defaults import with_schedule

# A tiny random model: the schedule is what is tested, not the default model's weights.
TINY = {
    "model": "test_efficientnet",
    "pretrained": False,
    "data.image_size": 32,
    "train.lr": 0.01,
    "train.log_with": "[]",
    "train.progress_bar": False,
}


@pytest.fixture
def info_log(caplog):
    caplog.set_level(logging.INFO, logger="hf_transfer")
    return caplog


def test_auto_batch_size_is_an_eighth_of_the_set_at_most_32():
    assert [auto_batch_size(n) for n in (1, 2, 3, 15, 16, 19, 50, 120, 255, 256, 257, 10_000)] == [
        1, 2, 2, 2, 2, 2, 6, 15, 31, 32, 32, 32
    ]  # fmt: skip
    assert AUTO_MAX_BATCH == 32


def test_auto_epochs_reach_160_steps_between_3_and_20_epochs():
    # 8 steps per epoch (any set of up to 256 examples): 20 epochs; large sets: 3 epochs, as before.
    assert [auto_epochs(steps) for steps in (1, 5, 8, 9, 16, 31, 53, 54, 1000)] == [20, 20, 20, 18, 10, 6, 4, 3, 3]


def test_with_schedule_chooses_from_the_training_set_and_logs_it(info_log):
    config, card = with_schedule(load_config(None, []), 50, 1)
    assert (config.train.batch_size, config.train.epochs) == (6, 20)
    assert card == "train.batch_size 6, train.epochs 20 (auto, from 50 training examples)"
    assert (
        "train.batch_size: auto -> 6 (50 training examples: 1/8 of them, at most 32; set train.batch_size=N to change)"
    ) in info_log.text
    assert (
        "train.epochs: auto -> 20 (8 optimizer steps per epoch: enough epochs for 160 steps, from 3 to 20; set "
        "train.epochs=N to change)"
    ) in info_log.text
    assert config.lp_ft.probe_epochs is None  # not an LP-FT run: nothing to choose

    # Per process, and per optimizer step: 2 processes see 2000 each, 62 batches; accumulation 2: 31 steps.
    config, _ = with_schedule(load_config(None, ["train.gradient_accumulation_steps=2"]), 4000, 2)
    assert (config.train.batch_size, config.train.epochs) == (32, 6)
    assert "4000 training examples over 2 processes" in info_log.text
    assert "31 optimizer steps per epoch" in info_log.text

    # LP-FT's probe stage gets epochs by the same rule.
    config, _ = with_schedule(load_config(None, ["strategy=lp_ft"]), 400, 1)
    assert (config.train.batch_size, config.train.epochs, config.lp_ft.probe_epochs) == (32, 14, 14)


def test_an_explicit_value_always_wins(info_log):
    given = load_config(None, ["train.epochs=5", "train.batch_size=4", "strategy=lp_ft", "lp_ft.probe_epochs=7"])
    config, card = with_schedule(given, 50, 1)
    assert config == given and card is None
    assert "auto ->" not in info_log.text
    config, _ = with_schedule(load_config(None, ["train.epochs=5"]), 50, 1)
    assert (config.train.batch_size, config.train.epochs) == (6, 5)
    config, _ = with_schedule(load_config(None, ["train.batch_size=25"]), 50, 1)  # 2 steps per epoch
    assert (config.train.batch_size, config.train.epochs) == (25, 20)
    # max_steps counts instead of epochs; a stream has no size: the largest auto batch, epochs unused.
    config, _ = with_schedule(load_config(None, ["train.max_steps=30"]), 50, 1)
    assert (config.train.batch_size, config.train.epochs) == (6, None)
    config, card = with_schedule(load_config(None, ["train.max_steps=30"]), None, 1)
    assert (config.train.batch_size, config.train.epochs) == (32, None)
    assert card == "train.batch_size 32 (auto, from a stream)"


def test_auto_is_written_as_auto_or_null_and_shown_so():
    config = load_config(None, ["train.epochs=auto", "train.batch_size=null", "lp_ft.probe_epochs=auto"])
    assert (config.train.epochs, config.train.batch_size, config.lp_ft.probe_epochs) == (None, None, None)
    defaults = {key: default for key, default, _ in describe_fields()}
    assert (defaults["train.epochs"], defaults["train.batch_size"], defaults["lp_ft.probe_epochs"]) == (("auto",) * 3)
    assert defaults["train.max_steps"] == "null"  # unset, not chosen by the run
    with pytest.raises(ConfigError, match=r"train.epochs must be an integer >= 1 \(or auto\), got 'many'"):
        load_config(None, ["train.epochs=many"])
    with pytest.raises(ConfigError, match=r"train.batch_size must be an integer >= 1 \(or auto\), got 0"):
        load_config(None, ["train.batch_size=0"])


def test_zero_config_trains_a_few_shot_folder(tmp_path, info_log, capsys):
    """3 classes x 8 images and nothing else that changes learning: 19 training examples (5 held out) did not
    fill one batch of 32 (the run stopped before training); now batch 2, 9 steps per epoch, 18 epochs."""
    images = write_color_images(tmp_path / "images", per_class=8, modes=False)
    out = tmp_path / "out"
    assert main(["train", "--data", str(images), *as_overrides({**TINY, "output_dir": out})]) == 0
    assert "train.batch_size: auto -> 2 (19 training examples: 1/8 of them, at most 32;" in info_log.text
    assert "train.epochs: auto -> 18 (9 optimizer steps per epoch:" in info_log.text
    assert "Setup: 1 process (cpu), mixed precision no; batch 2 per device x 1 x 1" in info_log.text
    metrics = json.loads(RunDir(out).metrics.read_text())
    assert (metrics["global_step"], len(metrics["history"]), metrics["batch_size"]) == (162, 18, 2)
    saved = yaml.safe_load(RunDir(out).config.read_text())
    assert (saved["train"]["batch_size"], saved["train"]["epochs"]) == (2, 18)  # run again from it: the same schedule
    # The default strategy: a linear probe on cached features (the head alone trains).
    assert saved["strategy"] == "linear_probe" and "The head trains on cached backbone features" in info_log.text
    card = (out / "README.md").read_text()
    assert "18 epochs; train.batch_size 2, train.epochs 18 (auto, from 19 training examples)." in card


def test_the_engine_refuses_an_unresolved_schedule(tmp_path):
    from hf_transfer.engine.loop import Engine, FitData

    engine = Engine(load_config(None, ["train.lr=0.1", "train.log_with=[]"]).train, tmp_path)
    try:
        with pytest.raises(ConfigError, match="resolve train.batch_size before fit"):
            engine.fit(None, FitData([], [], None, None), ["a", "b"])  # type: ignore[arg-type]
    finally:
        engine.close()


def test_a_fit_takes_its_settings_from_its_plan_and_leaves_the_engines_as_built(tmp_path):
    """A stage's settings travel in its FitPlan: nothing of them stays on the engine for the next fit, and the
    setup a run reports is the one its fit trained with."""
    from dataclasses import replace

    import torch

    from hf_transfer.engine.loop import Engine, FitData, FitPlan

    built = replace(load_config(None, ["train.lr=0.1", "train.log_with=[]"]).train, batch_size=4, epochs=1)
    examples = [{"x": torch.full((3,), float(i % 2)), "labels": i % 2} for i in range(8)]
    data = FitData(
        train=examples,
        eval=examples,
        collate=lambda rows: {
            "x": torch.stack([r["x"] for r in rows]),
            "labels": torch.tensor([r["labels"] for r in rows]),
        },
        logits=lambda model, batch: model(batch["x"]),
    )
    engine = Engine(built, tmp_path)
    try:
        stage = replace(built, batch_size=2, lr=0.01, save_total_limit=1, progress_bar=False)
        fit = engine.fit(torch.nn.Linear(3, 2), data, ["a", "b"], FitPlan(settings=stage))
        assert engine.settings == built  # not rebound to the stage's settings
        assert fit.batch_size == 2 and fit.global_step == 4
        assert engine.trained_setup(fit).batch_size_per_device == 2 and engine.setup.batch_size_per_device == 4
    finally:
        engine.close()
