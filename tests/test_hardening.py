"""An adversarial user: checkpoints that carry code, runs that diverge, two runs and one folder, resumes
from somewhere else. Nothing runs that was not asked for; no run reports success on garbage; no run
destroys another's output."""

from __future__ import annotations

import json
import math
import os
import pickle
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import tiny_image_overrides
from filelock import FileLock

from hf_transfer import load_config, train
from hf_transfer.adapters.image import ImageClassificationAdapter
from hf_transfer.artifacts import json_safe, write_json
from hf_transfer.cli import main
from hf_transfer.errors import DataError, ModelError, RunDirError, TrainingDiverged
from hf_transfer.inference import evaluate_run, load_run
from hf_transfer.weights import read_state_dict


def _config(train_dir, val_dir, out, **extra):
    return load_config(None, tiny_image_overrides(train_dir, val_dir, out, **extra))


class _RunsCode:
    """Unpickling this runs a shell command that leaves a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture
def checkpointed(color_data, tmp_path):
    """A finished run with a checkpoint per epoch."""
    train_dir, val_dir = color_data
    result = train(_config(train_dir, val_dir, tmp_path / "run", **{"train.epochs": 2, "train.save_total_limit": 5}))
    return train_dir, val_dir, result


def _copy_checkpoint(source_run: Path, target: Path, index: int = 0, name: str | None = None) -> Path:
    checkpoint = sorted((source_run / "checkpoints").glob("step_*"))[index]
    return Path(shutil.copytree(checkpoint, target / (name or checkpoint.name)))


# ------------------------------------------------------------------------ code in checkpoints


@pytest.mark.parametrize("planted", ["custom_checkpoint_0.pkl", "random_states_0.pkl"])
def test_resume_never_unpickles_code_from_a_checkpoint(checkpointed, tmp_path, planted):
    train_dir, val_dir, result = checkpointed
    checkpoint = _copy_checkpoint(result.output_dir, tmp_path / "downloaded")
    marker = tmp_path / "pwned"
    with (checkpoint / planted).open("wb") as f:
        pickle.dump(_RunsCode(marker), f)
    config = _config(train_dir, val_dir, tmp_path / "new", **{"train.resume_from_checkpoint": str(checkpoint)})
    with pytest.raises(RunDirError, match=planted):
        train(config)
    assert not marker.exists()


# ---------------------------------------------------------------------------- runs that lie


def _nan_after(calls: int, monkeypatch) -> None:
    """From the `calls`-th training forward on, the model's logits are NaN."""
    original, count = ImageClassificationAdapter.logits, {"n": 0}

    def logits(self, model, batch):
        out = original(self, model, batch)
        if model.training:
            count["n"] += 1
            if count["n"] >= calls:
                return out * float("nan")
        return out

    monkeypatch.setattr(ImageClassificationAdapter, "logits", logits)


def test_a_nan_loss_stops_the_run_and_keeps_what_was_good(color_data, tmp_path, monkeypatch):
    train_dir, val_dir = color_data
    _nan_after(9, monkeypatch)  # 6 steps per epoch: epoch 0 and its checkpoint are good
    out = tmp_path / "run"
    with pytest.raises(TrainingDiverged, match=r"step 9 \(epoch 1\).*step_0000006.*best weights"):
        train(_config(train_dir, val_dir, out, **{"train.epochs": 3, "train.logging_steps": 4}))
    assert not (out / "metrics.json").exists() and not (out / "run_info.json").exists()  # no success reported
    assert [p.name for p in (out / "checkpoints").glob("step_*")] == ["step_0000006"]
    from safetensors.torch import load_file

    best = load_file(str(out / "checkpoints" / "best" / "model.safetensors"))
    assert all(torch.isfinite(t).all() for t in best.values())


def test_the_cli_exits_non_zero_on_a_nan_loss(color_data, tmp_path, monkeypatch, capsys):
    train_dir, val_dir = color_data
    _nan_after(1, monkeypatch)
    code = main(["train", *tiny_image_overrides(train_dir, val_dir, tmp_path / "run")])
    assert code == 2 and "NaN/inf at optimizer step 1" in capsys.readouterr().err


def test_a_few_nan_losses_can_be_skipped_when_asked(color_data, tmp_path, monkeypatch):
    train_dir, val_dir = color_data
    original, count = ImageClassificationAdapter.logits, {"n": 0}

    def logits(self, model, batch):  # two bad batches, then healthy again
        out = original(self, model, batch)
        if model.training:
            count["n"] += 1
            if count["n"] in (3, 4):
                return out * float("nan")
        return out

    monkeypatch.setattr(ImageClassificationAdapter, "logits", logits)
    result = train(_config(train_dir, val_dir, tmp_path / "run", **{"train.max_nonfinite_losses": 2}))
    assert all(math.isfinite(h["loss"]) for h in result.metrics["history"])
    assert all(torch.isfinite(p).all() for p in result.model.parameters())


def test_metrics_and_predictions_are_always_valid_json(tmp_path):
    path = tmp_path / "metrics.json"
    write_json(path, {"loss": float("nan"), "history": [{"loss": float("inf")}], "accuracy": 0.5})

    def refuse(constant: str):
        raise ValueError(constant)

    loaded = json.loads(path.read_text(), parse_constant=refuse)  # strict: NaN/Infinity would raise
    assert loaded == {"loss": None, "history": [{"loss": None}], "accuracy": 0.5}
    assert json_safe([{"score": float("-inf")}]) == [{"score": None}]


# ------------------------------------------------------------------ one run, one output_dir


def test_a_folder_holding_a_finished_run_is_refused_then_overwritten_on_request(checkpointed, tmp_path):
    train_dir, val_dir, result = checkpointed
    out = result.output_dir
    (out / "notes.txt").write_text("mine")  # not the run's: must survive an overwrite
    stale = json.loads((out / "run_info.json").read_text())["artifacts"]
    assert "model.safetensors" in stale
    with pytest.raises(RunDirError, match="already holds a finished run.*--overwrite"):
        train(_config(train_dir, val_dir, out, **{"train.epochs": 1}))
    (out / "model.safetensors").write_bytes(b"marker of the old run")
    replaced = train(_config(train_dir, val_dir, out, **{"train.epochs": 1, "overwrite": True}))
    assert (out / "notes.txt").read_text() == "mine"
    assert (out / "model.safetensors").read_bytes() != b"marker of the old run"
    assert [p.name for p in (out / "checkpoints").glob("step_*")] == ["step_0000006"]  # only the new run's
    assert json.loads((out / "metrics.json").read_text())["global_step"] == replaced.fit.global_step == 6


def test_a_folder_another_run_is_writing_is_refused(color_data, tmp_path):
    train_dir, val_dir = color_data
    out = tmp_path / "run"
    out.mkdir()
    with FileLock(str(out / ".hf_transfer.lock")):  # as a concurrent run holds it
        with pytest.raises(RunDirError, match="Another run is writing"):
            train(_config(train_dir, val_dir, out, **{"train.epochs": 1}))
    assert not (out / "checkpoints").exists()


def test_checkpoints_of_an_unfinished_run_are_not_taken_over(checkpointed, tmp_path):
    train_dir, val_dir, result = checkpointed
    crashed = tmp_path / "crashed"
    _copy_checkpoint(result.output_dir, crashed / "checkpoints")
    with pytest.raises(RunDirError, match="checkpoints of an unfinished run.*resume_from_checkpoint=latest"):
        train(_config(train_dir, val_dir, crashed, **{"train.epochs": 1}))


# ------------------------------------------------------------------ resume belongs to the run


@pytest.mark.parametrize(
    ("change", "named"), [({"strategy": "lora"}, "strategy: 'full'"), ({"model": "test_vit"}, "model: ")]
)
def test_resuming_another_runs_checkpoint_names_both_sides(checkpointed, tmp_path, change, named):
    train_dir, val_dir, result = checkpointed
    extra = {"train.resume_from_checkpoint": "latest", "train.epochs": 3, **change}
    with pytest.raises(RunDirError, match=f"belongs to another run.*{named}.*\\(checkpoint\\) vs"):
        train(_config(train_dir, val_dir, result.output_dir, **extra))


def test_pruning_removes_only_this_runs_checkpoints(checkpointed, tmp_path):
    train_dir, val_dir, result = checkpointed
    foreign = tmp_path / "foreign"
    train(_config(train_dir, val_dir, foreign, **{"strategy": "linear_probe", "train.epochs": 1}))
    _copy_checkpoint(foreign, result.output_dir / "checkpoints", name="step_0000001")  # another run's
    extra = {"train.resume_from_checkpoint": "latest", "train.epochs": 5, "train.save_total_limit": 1}
    train(_config(train_dir, val_dir, result.output_dir, **extra))
    names = sorted(p.name for p in (result.output_dir / "checkpoints").glob("step_*"))
    assert names == ["step_0000001", "step_0000030"]  # the other run's kept; of this run's, the newest


def test_resume_from_another_folder_saves_the_model_its_metrics_describe(color_data, tmp_path):
    """Training labels shuffled, so validation accuracy peaks before the end. Resumed in a new folder from
    the checkpoint right after the best epoch, the run's later epochs are worse; the model it saves must
    still be the best epoch's, so that evaluate measures what metrics.json and the card say."""
    train_dir, val_dir = (shutil.copytree(d, tmp_path / d.name) for d in color_data)
    rng = random.Random(0)
    for file in sorted(train_dir.rglob("*.png")):
        target = train_dir / rng.choice(["red", "green", "blue"]) / f"moved-{file.parent.name}-{file.name}"
        file.rename(target)
    common = {"train.epochs": 4, "train.save_total_limit": 10, "train.lr": 0.05}
    first = train(_config(train_dir, val_dir, tmp_path / "first", **common))
    best = first.metrics["best_epoch"]
    assert best < 3, "the shuffled labels should make an early epoch the best"
    checkpoint = _copy_checkpoint(first.output_dir, tmp_path / "elsewhere", index=best)
    out = tmp_path / "resumed"
    resumed = train(_config(train_dir, val_dir, out, **common, **{"train.resume_from_checkpoint": str(checkpoint)}))
    assert resumed.metrics["best_epoch"] == best
    report, _ = evaluate_run(load_run(out, device="cpu"), str(val_dir))
    assert report["metrics"]["accuracy"] == pytest.approx(resumed.metrics["accuracy"])
    assert report["metrics"]["loss"] == pytest.approx(resumed.metrics["loss"], rel=1e-4)


def test_a_checkpoint_without_its_best_weights_is_refused(checkpointed, tmp_path):
    train_dir, val_dir, result = checkpointed
    checkpoint = _copy_checkpoint(result.output_dir, tmp_path / "elsewhere")
    (checkpoint / "best.safetensors").unlink()
    config = _config(train_dir, val_dir, tmp_path / "new", **{"train.resume_from_checkpoint": str(checkpoint)})
    with pytest.raises(RunDirError, match="records a best epoch.*best.safetensors"):
        train(config)


def test_damaged_checkpoint_and_model_files_are_named(checkpointed, tmp_path):
    """A cut-short safetensors file or trainer_state.json: safetensors' and json's own errors name no file."""
    train_dir, val_dir, result = checkpointed
    damage = {
        "trainer_state.json": lambda f: f.write_text(f.read_text()[:40]),
        "model.safetensors": lambda f: f.write_bytes(f.read_bytes()[: f.stat().st_size // 2]),
        "best.safetensors": lambda f: f.write_bytes(b"not safetensors at all"),
    }
    for name, cut in damage.items():
        checkpoint = _copy_checkpoint(result.output_dir, tmp_path / name, name="step_0000006")
        cut(checkpoint / name)
        config = _config(
            train_dir, val_dir, tmp_path / f"resumed-{name}", **{"train.resume_from_checkpoint": str(checkpoint)}
        )
        with pytest.raises(RunDirError, match=re.escape(str(checkpoint / name))):
            train(config)
    run = Path(shutil.copytree(result.output_dir, tmp_path / "copied-run"))
    model = run / "model.safetensors"
    model.write_bytes(model.read_bytes()[:100])
    with pytest.raises(ModelError, match=re.escape(f"Model file {str(model)!r} is not a readable safetensors file")):
        load_run(run, device="cpu")
    weights = tmp_path / "downloaded.safetensors"  # a `weights:` file
    weights.write_bytes(b"x" * 9)
    with pytest.raises(ModelError, match=re.escape(f"Weights file {str(weights)!r} is not a readable safetensors")):
        read_state_dict(weights)


@pytest.mark.slow  # about half a minute: a launched process (its imports) and three trainings
def test_a_run_killed_mid_training_resumes_to_the_end_of_the_uninterrupted_run(color_data, tmp_path):
    """kill -9 of an `hf-transfer train` process once it has checkpointed, then
    `train.resume_from_checkpoint=latest` in the same folder: the killed run's lock and a checkpoint it was
    still writing do not stop or mislead it, and it ends bit-identical to a run never interrupted."""
    train_dir, val_dir = color_data
    common = {
        "strategy": "full",
        "train.epochs": 2,  # 12 steps: the process is killed at about step 2, long before its end
        "train.checkpoint_every_steps": 2,
        "data.augment": True,
        "data.crop_scale": "[0.5, 1.0]",
        "data.hflip": 0.5,
    }
    whole = train(_config(train_dir, val_dir, tmp_path / "whole", **common))

    out = tmp_path / "killed"
    command = [sys.executable, "-m", "hf_transfer", "train", *tiny_image_overrides(train_dir, val_dir, out, **common)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while not list((out / "checkpoints").glob("step_*[0-9]")) and process.poll() is None:
        assert time.monotonic() < deadline, "no checkpoint within 300 s"
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    stderr = process.communicate()[1].decode()
    assert process.returncode == -signal.SIGKILL, f"the run ended before it was killed:\n{stderr[-2000:]}"
    assert not (out / "metrics.json").exists()
    assert (out / ".hf_transfer.lock").exists()  # left behind by the killed process, its flock released
    # What a kill inside save_state leaves (whether or not this kill landed there): a later step's
    # folder still under its temporary name, its files cut short. `latest` must not take it.
    newest = max((out / "checkpoints").glob("step_*[0-9]"))
    half = shutil.copytree(newest, out / "checkpoints" / "step_9999999.tmp")
    for file in half.glob("*.safetensors"):
        file.write_bytes(file.read_bytes()[:100])

    resumed = train(_config(train_dir, val_dir, out, **common, **{"train.resume_from_checkpoint": "latest"}))
    assert resumed.fit.global_step == whole.fit.global_step == 12
    assert resumed.metrics["loss"] == whole.metrics["loss"]
    a, b = whole.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


# ------------------------------------------------------------------------- found before training


@pytest.mark.parametrize("decode_cache", [True, False])
def test_a_broken_validation_file_is_found_before_training(color_data, tmp_path, decode_cache):
    train_dir, val_dir = (shutil.copytree(d, tmp_path / d.name) for d in color_data)
    (val_dir / "red" / "broken.png").write_bytes(b"not a png")
    out = tmp_path / "run"
    # The file's path names it (no row number before it: rows of a folder are no one's numbering).
    with pytest.raises(DataError, match=r"^Cannot decode image \S*/red/broken.png"):
        train(_config(train_dir, val_dir, out, **{"data.decode_cache": decode_cache, "train.epochs": 1}))
    assert not (out / "checkpoints").exists()  # no training step was spent
