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
from hf_transfer.catalog.weights import read_state_dict
from hf_transfer.cli import main
from hf_transfer.core.atomic import json_safe, write_json
from hf_transfer.core.errors import DataError, ModelError, RunDirError, TrainingDiverged
from hf_transfer.core.rundir import RunDir
from hf_transfer.inference import evaluate_run, load_run


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
    original, count = ImageClassificationAdapter.models_type.logits, {"n": 0}

    def logits(self, model, batch):
        out = original(self, model, batch)
        if model.training:
            count["n"] += 1
            if count["n"] >= calls:
                return out * float("nan")
        return out

    monkeypatch.setattr(ImageClassificationAdapter.models_type, "logits", logits)


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
    original, count = ImageClassificationAdapter.models_type.logits, {"n": 0}

    def logits(self, model, batch):  # two bad batches, then healthy again
        out = original(self, model, batch)
        if model.training:
            count["n"] += 1
            if count["n"] in (3, 4):
                return out * float("nan")
        return out

    monkeypatch.setattr(ImageClassificationAdapter.models_type, "logits", logits)
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


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    """Every file the package writes in place goes through core.atomic: the old content stays whole until
    the new one is complete, and a writer that fails midway leaves nothing behind."""
    from hf_transfer.core.atomic import atomic_path

    path = tmp_path / "sub" / "model.safetensors"
    write_json(path, {"old": 1})
    with pytest.raises(RuntimeError), atomic_path(path) as tmp:
        tmp.write_text('{"new": ')  # half written, then the writer fails
        raise RuntimeError("disk full")
    assert json.loads(path.read_text()) == {"old": 1} and sorted(p.name for p in path.parent.iterdir()) == [path.name]
    with atomic_path(path) as tmp:
        tmp.write_text('{"new": 2}')
    assert json.loads(path.read_text()) == {"new": 2} and sorted(p.name for p in path.parent.iterdir()) == [path.name]


# ------------------------------------------------------------------ one run, one output_dir


def test_a_folder_holding_a_finished_run_is_refused_then_overwritten_on_request(checkpointed, tmp_path):
    train_dir, val_dir, result = checkpointed
    out = result.output_dir
    # Not the run's, even inside the folders the run writes into: each must survive an overwrite.
    mine = [out / "notes.txt", out / "logs" / "notes.txt", out / "eval" / "notes.txt", out / "checkpoints" / "x.txt"]
    for path in mine:
        path.parent.mkdir(exist_ok=True)
        path.write_text("mine")
    stale = json.loads((out / "run_info.json").read_text())["artifacts"]
    assert "model.safetensors" in stale
    with pytest.raises(RunDirError, match="already holds a finished run.*--overwrite"):
        train(_config(train_dir, val_dir, out, **{"train.epochs": 1}))
    (out / "model.safetensors").write_bytes(b"marker of the old run")
    replaced = train(_config(train_dir, val_dir, out, **{"train.epochs": 1, "overwrite": True}))
    assert all(path.read_text() == "mine" for path in mine)
    assert not (out / ".hf_transfer.previous").exists()  # the old run, moved aside, is gone once the new one ended
    assert (out / "model.safetensors").read_bytes() != b"marker of the old run"
    assert [p.name for p in (out / "checkpoints").glob("step_*")] == ["step_0000006"]  # only the new run's
    assert json.loads((out / "metrics.json").read_text())["global_step"] == replaced.fit.global_step == 6


@pytest.mark.parametrize("overwrite", [False, True])
def test_a_folder_of_other_files_is_never_written(color_data, tmp_path, overwrite):
    """A folder that holds no run but files of the names a run writes (a model downloaded from the Hub, a
    project): nothing in it is replaced or removed, --overwrite or not, and nothing is added."""
    train_dir, val_dir = color_data
    out = tmp_path / "downloaded"
    theirs = {"README.md": "# my model", "config.yaml": "mine: 1", "tokenizer.json": "{}", "logs/x.txt": "x"}
    for name, text in theirs.items():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_text(text)
    with pytest.raises(RunDirError, match=r"holds no hf-transfer run \(README.md, config.yaml, logs, tokenizer.json\)"):
        train(_config(train_dir, val_dir, out, **{"train.epochs": 1, "overwrite": overwrite}))
    assert {p.relative_to(out).as_posix(): p.read_text() for p in out.rglob("*") if p.is_file()} == theirs


def test_an_output_dir_that_is_a_file_is_refused(color_data, tmp_path):
    train_dir, val_dir = color_data
    out = tmp_path / "notes.txt"
    out.write_text("mine")
    with pytest.raises(RunDirError) as err:
        train(_config(train_dir, val_dir, out, **{"train.epochs": 1}))
    assert str(err.value) == f"output_dir {out} is a file, not a folder: give a new or empty folder as output_dir."
    assert out.read_text() == "mine" and sorted(tmp_path.iterdir()) == [tmp_path / "data", out]


@pytest.mark.parametrize("broken", ["validation image", "training image", "model"])
def test_overwrite_keeps_the_old_run_when_the_new_one_fails_before_its_first_checkpoint(checkpointed, tmp_path, broken):
    """--overwrite replaces the old run only once the new one has something to put there: a corrupt image
    or a model that cannot load leaves the old run exactly as it was."""
    train_dir, val_dir, result = checkpointed
    out = result.output_dir
    before = {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    train_dir, val_dir = (shutil.copytree(d, tmp_path / "copy" / d.name) for d in (train_dir, val_dir))
    extra = {"train.epochs": 1, "overwrite": True, "data.decode_cache": False}
    if broken == "model":
        extra["model"] = "no_such_timm_model_xyz"
    else:
        ((val_dir if broken == "validation image" else train_dir) / "red" / "000.png").write_bytes(b"not a png")
    with pytest.raises((DataError, ModelError, RuntimeError)):
        train(_config(train_dir, val_dir, out, **extra))
    after = {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            "remove",
            r"holds no training-data position for process 0 \(loader_state_0\.json\): it was written by an older",
        ),
        ("stream", r"holds the position of a 'stream' training loader, but this run reads its training data as 'map'"),
    ],
)
def test_a_checkpoint_without_this_runs_loader_position_is_refused(checkpointed, tmp_path, change, message):
    """Issue 19: every checkpoint holds each process's training-loader position; one without it (written by an
    older version) or with another kind of loader's is refused by name, not resumed from the epoch's start."""
    train_dir, val_dir, result = checkpointed
    checkpoint = _copy_checkpoint(result.output_dir, tmp_path / "downloaded")
    position = checkpoint / "loader_state_0.json"
    if change == "remove":
        position.unlink()
    else:
        position.write_text(json.dumps({**json.loads(position.read_text()), "kind": change}))
    config = _config(train_dir, val_dir, tmp_path / "new", **{"train.resume_from_checkpoint": str(checkpoint)})
    with pytest.raises(RunDirError, match=message):
        train(config)


def test_a_replacing_run_killed_before_its_first_checkpoint_gives_the_old_run_back(checkpointed):
    """kill -9 of a run that was replacing another (moved aside when the folder was claimed): the next
    claim of the folder puts the old run back, so nothing was lost."""

    _, _, result = checkpointed
    out = result.output_dir
    before = {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    killed = RunDir(out)
    assert killed.claim(resume=False, overwrite=True) is None
    assert not (out / "run_info.json").exists()  # moved aside
    (out / "logs" / "hf_transfer").mkdir(parents=True)  # what the killed run had written: its tracker's start
    killed._lock.release()  # a killed process's lock is released by the system
    later = RunDir(out)
    assert "already holds a finished run" in later.claim(resume=False, overwrite=False)
    after = {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before and not (out / "logs").exists()


def test_a_failed_run_leaves_no_folder_behind(color_data, tmp_path):
    train_dir, _ = color_data
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "runs" / "new"
    with pytest.raises(DataError):
        train(_config(train_dir, empty, out, **{"train.epochs": 1}))
    assert not (tmp_path / "runs").exists()


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
    # A trainer_state.json that reads as JSON but holds a key this version never writes: edited, or another version's.
    checkpoint = _copy_checkpoint(result.output_dir, tmp_path / "edited", name="step_0000006")
    state = json.loads((checkpoint / "trainer_state.json").read_text())
    (checkpoint / "trainer_state.json").write_text(json.dumps({**state, "x": 1}))
    config = _config(
        train_dir, val_dir, tmp_path / "resumed-edited", **{"train.resume_from_checkpoint": str(checkpoint)}
    )
    message = (
        f"Checkpoint file {checkpoint / 'trainer_state.json'} holds keys this version does not write (x): it was "
        "written by another version or edited. Resume from another checkpoint, or start a new run."
    )
    with pytest.raises(RunDirError, match=re.escape(message)):
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


# ------------------------------------------------------------------------- YAML a user did not write


def _alias_bomb(levels: int = 12) -> str:
    """A flow list of `levels` anchors, each repeating the one before 9 times: 9**levels values."""
    anchors = ["&a0 [x, x, x, x, x, x, x, x, x]"]
    anchors += [f"&a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, levels)]
    return f"[{', '.join(anchors)}]"


@pytest.mark.parametrize("where", ["config file", "override", "candidates file", "dataset card"])
def test_a_yaml_alias_bomb_is_refused_wherever_yaml_is_read(where, tmp_path):
    """9**12 values from a few hundred bytes: every YAML the package reads goes through one loader that
    refuses it at once, naming what it read (a loader that accepts it leaves a merge that never ends)."""
    from hf_transfer.core.errors import ConfigError
    from hf_transfer.data.splits import load_source
    from hf_transfer.rank import candidate_config, load_candidates

    bomb = _alias_bomb()
    start = time.monotonic()
    if where == "config file":
        path = tmp_path / "config.yaml"
        path.write_text(f"data:\n  labels: {bomb}\n")
        with pytest.raises(ConfigError, match=f"{path.name}.*aliases"):
            load_config(path)
    elif where == "override":
        with pytest.raises(ConfigError, match="data.labels=.*aliases"):
            load_config(None, [f"data.labels={bomb}"])
    elif where == "candidates file":
        path = tmp_path / "candidates.yaml"
        path.write_text(f"- name: bomb\n  overrides:\n    data.labels: {bomb}\n")
        with pytest.raises(ConfigError, match=f"{path.name}.*aliases"):
            for candidate in load_candidates(path):
                candidate_config(load_config(None, ["task=image-classification", "model=x"]), candidate)
    else:
        folder = tmp_path / "reviews"
        folder.mkdir()
        (folder / "train.csv").write_text("text,label\ngood,1\nbad,0\n")
        (folder / "README.md").write_text(f"---\ntags: {bomb}\n---\n# Reviews\n")
        with pytest.raises(DataError, match="README.md.*aliases"):
            load_source(str(folder), None)
    assert time.monotonic() - start < 10


@pytest.mark.parametrize("where", ["config file", "candidates file", "override"])
def test_a_yaml_alias_inside_its_own_anchor_is_refused(where, tmp_path):
    """`&x [a, *x]` is a list that holds itself: PyYAML builds it (a cycle), and whatever walks it never ends."""
    from hf_transfer.core.errors import ConfigError
    from hf_transfer.rank import load_candidates

    itself = "an alias refers to a node that contains it (the document would contain itself)"
    fix = "Write the values out instead of repeating aliases."
    path = tmp_path / f"{where.split()[0]}.yaml"
    if where == "config file":
        path.write_text("data:\n  labels: &x [a, *x]\n")
        with pytest.raises(ConfigError) as err:
            load_config(path)
        assert str(err.value) == f"Config file {str(path)!r} is refused: {itself}. {fix}"
    elif where == "candidates file":
        path.write_text("- name: a\n  overrides: &x {train: {lr: 0.1}, more: *x}\n")
        with pytest.raises(ConfigError) as err:
            load_candidates(path)
        assert str(err.value) == f"Candidates file {str(path)!r} is refused: {itself}. {fix}"
    else:
        with pytest.raises(ConfigError) as err:
            load_config(None, ["data.labels=&x [a, *x]"])
        assert (
            str(err.value) == f"Override 'data.labels=&x [a, *x]': its value '&x [a, *x]' is refused: {itself}. {fix}"
        )


def test_yaml_is_read_in_one_place():
    """The guard holds only if nothing reads YAML around it: no yaml.load / safe_load / full_load, no
    OmegaConf.load / from_dotlist / create(text) outside yaml_reader.py."""
    reading = re.compile(r"yaml\.(safe_|full_|unsafe_)?load\b|\bsafe_load\(|OmegaConf\.(load|from_dotlist|create)\(")
    package = Path(__file__).resolve().parents[1] / "hf_transfer"
    offenders = [
        f"{path.relative_to(package)}:{number}"
        for path in sorted(package.rglob("*.py"))
        if path.name != "yaml_reader.py"
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if reading.search(line)
    ]
    assert offenders == []


def test_the_yaml_loader_reads_configs_as_before(tmp_path):
    """Numbers such as 1e-3, dates kept as text: read as OmegaConf read them."""
    path = tmp_path / "config.yaml"
    path.write_text("train:\n  lr: 1e-3\n  extra_metrics: [matthews_correlation]\ndata:\n  labels: [2024-01-01, b]\n")
    config = load_config(path, ["train.weight_decay=5e-4", "data.crop_scale=[0.5, 1.0]"])
    assert config.train.lr == 1e-3 and config.train.weight_decay == 5e-4 and config.data.labels == ["2024-01-01", "b"]
    assert config.data.crop_scale == [0.5, 1.0]


# ------------------------------------------------------------------------- what a run may write, and where


@pytest.mark.parametrize("name", ["../x", "sub/x", "..", "a\\b"])
def test_evaluate_writes_its_report_only_into_eval(name, tmp_path_factory, capsys):
    import artifact_runs as R

    out = R.timm_full(tmp_path_factory).output_dir
    before = sorted(p for p in out.parent.rglob("*"))
    validation = R.image_data(tmp_path_factory)[1]
    assert main(["evaluate", str(out), "--data", str(validation), "--name", name, "--device", "cpu"]) == 2
    assert "is not a plain file name" in capsys.readouterr().err
    assert sorted(p for p in out.parent.rglob("*")) == before  # nothing written, inside the run or beside it


@pytest.mark.parametrize(
    ("command", "key"),
    [("train", "data.train"), ("compare", "data.train"), ("rank", "data.train"), ("train", "data.validation")],
)
def test_an_output_dir_inside_the_data_folder_is_refused(command, key, color_data, tmp_path, capsys):
    """Written inside the image folder, a run would be a new class folder of every later run on that data."""
    train_dir, val_dir = color_data
    folder = train_dir if key == "data.train" else val_dir
    before = sorted(p.relative_to(tmp_path) for p in (tmp_path / "data").rglob("*"))
    overrides = tiny_image_overrides(train_dir, val_dir, folder / "runs" / "x", **{"train.epochs": 1})
    candidates = ["--candidate", "name=a"] if command == "rank" else []
    assert main([command, *candidates, *overrides]) == 2
    err = capsys.readouterr().err
    assert f"output_dir {folder / 'runs' / 'x'} is inside the data folder '{folder}' ({key})" in err
    assert f"output_dir={os.path.relpath(tmp_path / 'data' / 'runs' / folder.name)}." in err  # beside the data
    assert sorted(p.relative_to(tmp_path) for p in (tmp_path / "data").rglob("*")) == before


def test_runs_without_output_dir_are_named_after_their_data_and_model(color_data, tmp_path, monkeypatch, capsys):
    """No output_dir: runs/<data>-<model>. Runs on other data never meet in one folder; a second run on
    the same data and model is refused with the ways on (another output_dir, --overwrite, resuming)."""
    train_dir, val_dir = color_data
    monkeypatch.chdir(tmp_path)
    photos, scans = (shutil.copytree(train_dir, tmp_path / name) for name in ("photos", "scans"))

    def overrides(data: Path) -> list[str]:
        values = tiny_image_overrides(data, val_dir, tmp_path / "unused", **{"train.epochs": 1})
        return [value for value in values if not value.startswith("output_dir=")]

    assert main(["config", *overrides(photos)]) == 0
    assert "output_dir: runs/photos-test_efficientnet" in capsys.readouterr().out
    first = train(load_config(None, overrides(photos)))
    second = train(load_config(None, overrides(scans)))
    assert first.output_dir == Path("runs/photos-test_efficientnet")
    assert second.output_dir == Path("runs/scans-test_efficientnet")
    assert all((tmp_path / r.output_dir / "run_info.json").is_file() for r in (first, second))
    with pytest.raises(RunDirError, match="runs/photos-test_efficientnet already holds a finished run.*--overwrite"):
        train(load_config(None, overrides(photos)))


def test_compare_and_rank_name_their_default_folder_after_the_data(tmp_path):
    """compare: runs/<data>-<model>-compare (its strategies in sub-folders); rank: runs/<data>-rank (its
    candidates are several models). An output_dir that is set is kept."""
    from hf_transfer.data.defaults import with_output_dir

    (tmp_path / "photos").mkdir()
    (tmp_path / "reviews.csv").write_text("text,label\ngood,1\n")
    photos = load_config(None, ["model=pypi:all-minilm-l6-v2", f"data.train={tmp_path / 'photos'}"])
    assert with_output_dir(photos).output_dir == "runs/photos-all-minilm-l6-v2"
    assert with_output_dir(photos, kind="compare").output_dir == "runs/photos-all-minilm-l6-v2-compare"
    assert with_output_dir(photos, kind="rank").output_dir == "runs/photos-rank"
    reviews = load_config(None, ["model=user/tiny-bert", f"data.train={tmp_path / 'reviews.csv'}"])
    assert with_output_dir(reviews, kind="compare").output_dir == "runs/reviews-tiny-bert-compare"
    assert with_output_dir(reviews, kind="rank").output_dir == "runs/reviews-rank"
    chosen = load_config(None, [f"data.train={tmp_path / 'photos'}", "output_dir=mine"])
    assert all(with_output_dir(chosen, kind=kind).output_dir == "mine" for kind in (None, "compare", "rank"))


@pytest.mark.parametrize("command", ["compare", "rank"])
def test_compare_and_rank_without_output_dir_write_into_their_default_folder(
    command, color_data, tmp_path, monkeypatch, capsys
):
    train_dir, val_dir = color_data
    monkeypatch.chdir(tmp_path)
    photos = shutil.copytree(train_dir, tmp_path / "photos")
    values = tiny_image_overrides(photos, val_dir, tmp_path / "unused", **{"train.epochs": 1})
    overrides = [value for value in values if not value.startswith("output_dir=")]
    what = ["--strategies", "linear_probe"] if command == "compare" else ["--candidate", "name=a"]
    assert main([command, *what, *overrides]) == 0
    written = {"compare": "photos-test_efficientnet-compare/comparison.md", "rank": "photos-rank/rank.md"}[command]
    assert (tmp_path / "runs" / written).is_file()
    assert [p.name for p in (tmp_path / "runs").iterdir()] == [written.split("/")[0]]  # nothing beside it


def test_the_run_folder_names_checkpoints_and_renames_them_only_once_complete(tmp_path):
    run_dir = RunDir(tmp_path / "run")
    assert run_dir.checkpoint_path(12) == tmp_path / "run" / "checkpoints" / "step_0000012"
    with run_dir.write_checkpoint(12) as tmp:
        tmp.mkdir(parents=True)
        (tmp / "part").write_text("a")
        assert run_dir.checkpoint_dirs() == []  # not listed while it is being written
    assert run_dir.checkpoint_dirs() == [run_dir.checkpoint_path(12)] and not tmp.exists()
    with run_dir.write_checkpoint(12) as tmp:  # written again (a resumed run): the new one replaces it
        tmp.mkdir()
        (tmp / "part").write_text("b")
    assert (run_dir.checkpoint_path(12) / "part").read_text() == "b"
    with run_dir.write_checkpoint(13, commit=False) as tmp:  # another process's part: the main one renames
        tmp.mkdir()
    assert run_dir.latest_checkpoint() == run_dir.checkpoint_path(12)
    with pytest.raises(OSError), run_dir.write_checkpoint(14) as tmp:  # a failed write is never listed
        tmp.mkdir()
        raise OSError("disk full")
    assert run_dir.latest_checkpoint() == run_dir.checkpoint_path(12) and tmp.is_dir()


def test_pruning_keeps_the_newest_of_this_runs_checkpoints_oldest_go_first(tmp_path):
    run_dir = RunDir(tmp_path)
    for step in (3, 1, 20, 2, 10):
        run_dir.checkpoint_path(step).mkdir(parents=True)
    run_dir.prune_checkpoints(2, ours=lambda path: path != run_dir.checkpoint_path(1))
    assert run_dir.checkpoint_dirs() == [run_dir.checkpoint_path(step) for step in (1, 10, 20)]


def test_the_model_is_staged_in_the_run_folder_and_moved_in_whole(tmp_path):
    run_dir = RunDir(tmp_path / "run")
    run_dir.root.mkdir()
    (run_dir.root / "merged").mkdir()
    (run_dir.root / "merged" / "old.bin").write_text("old")
    with run_dir.stage_model() as staging:
        assert staging.parent == run_dir.root and staging.name.startswith(".model-")
        (staging / "model.safetensors").write_text("new")
        (staging / "merged").mkdir()
        (staging / "merged" / "model.safetensors").write_text("new")
    assert sorted(p.name for p in run_dir.root.iterdir()) == ["merged", "model.safetensors"]
    assert [p.name for p in (run_dir.root / "merged").iterdir()] == ["model.safetensors"]
    with pytest.raises(RuntimeError), run_dir.stage_model() as staging:
        (staging / "model.safetensors").write_text("half")
        raise RuntimeError("killed")
    assert (run_dir.root / "model.safetensors").read_text() == "new"
    assert sorted(p.name for p in run_dir.root.iterdir()) == ["merged", "model.safetensors"]
