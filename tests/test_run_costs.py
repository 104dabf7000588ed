"""What a run pays besides the model's own work (issue 20): no stack extraction per example, each checkpoint
written once, the time to the first step and the evaluations' share said in the log, heavy packages imported
only by the runs that use them."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
import time
import traceback
from pathlib import Path

import psutil
import pytest
import torch
from accelerate import Accelerator
from conftest import tiny_image_overrides

from hf_transfer import ADAPTERS, load_config, train
from hf_transfer.core.rundir import RunDir
from hf_transfer.data.pipeline import ExampleView, decode_once
from hf_transfer.data.splits import load_source
from hf_transfer.engine.loop import evaluation_advice, lr_schedule

ROOT = Path(__file__).resolve().parents[1]

AUGMENTED = {"data.crop_scale": "[0.5, 1.0]", "data.hflip": 0.5, "data.augment": True}


def _augmented_view(train_dir, val_dir, tmp_path) -> ExampleView:
    config = load_config(None, tiny_image_overrides(train_dir, val_dir, tmp_path / "o", **AUGMENTED))
    adapter = ADAPTERS.get(config.task)(config)
    adapter.models.build_model(["blue", "green", "red"])
    rows = adapter.inputs.prepare_dataset(load_source(str(train_dir), "imagefolder")).rename_column("label", "labels")
    decoded, _ = decode_once(rows, adapter.inputs, augment=True, cache_root=str(tmp_path / "cache"))
    return ExampleView(decoded, adapter.inputs, augment=True, seed=0)


def test_augmenting_a_batch_extracts_no_stack_and_seeds_no_accelerator(color_data, tmp_path, monkeypatch):
    """Each example's augmentation is seeded on the CPU generator alone. torch.manual_seed would also seed
    every accelerator: where none is initialised, that queues the call with a formatted stack for CUDA, XPU
    and MTIA each (3 per example, 53,000 frame summaries in a profiled epoch), and where CUDA is up it would
    reseed the device's generator (dropout's) once per example."""
    view = _augmented_view(*color_data, tmp_path)
    stacks, seeded = [], []
    for name in ("format_stack", "extract_stack"):
        original = getattr(traceback, name)
        monkeypatch.setattr(traceback, name, lambda *a, _f=original, **k: stacks.append(1) or _f(*a, **k))
    monkeypatch.setattr(torch.cuda, "manual_seed_all", lambda seed: seeded.append(seed))
    before = torch.get_rng_state()
    batch = view.__getitems__(list(range(8)))
    assert len(batch) == 8
    assert stacks == [] and seeded == []
    assert torch.equal(torch.get_rng_state(), before)  # the process's own stream is untouched


@pytest.mark.parametrize("cadence", ["train.eval_every_steps", "train.checkpoint_every_steps"])
def test_a_step_that_ends_an_epoch_is_checkpointed_and_evaluated_once(color_data, tmp_path, monkeypatch, cadence):
    """49 images in batches of 8: 6 steps an epoch. A step cadence of 6 falls on every epoch's end, which
    evaluated and checkpointed that step, then checkpointed it again as the epoch ended."""
    written = []
    save_state = Accelerator.save_state
    monkeypatch.setattr(
        Accelerator,
        "save_state",
        lambda self, folder, *a, **k: written.append(Path(folder).name) or save_state(self, folder, *a, **k),
    )
    overrides = tiny_image_overrides(*color_data, tmp_path / "out", **{cadence: 6})
    result = train(load_config(None, overrides))
    assert written == ["step_0000006.tmp", "step_0000012.tmp", "step_0000018.tmp"]
    assert [(h["epoch"], h["step"]) for h in result.metrics["history"]] == [(0, 6), (1, 12), (2, 18)]
    state = json.loads((tmp_path / "out" / "checkpoints" / "step_0000012" / "trainer_state.json").read_text())
    assert (state["epoch"], state["batches_in_epoch"]) == (2, 0)  # the epoch's end, its evaluation included
    assert [h["step"] for h in state["history"]] == [6, 12]


@pytest.mark.parametrize("push", [False, True], ids=["local", "push_to_hub"])
def test_a_training_run_builds_one_run_dir_and_passes_it_down(color_data, tmp_path, monkeypatch, push):
    """The run folder's owner (its names, its lock, its checkpoints) is one object per run: train() builds it,
    the engine and the writers of the model, run files, report and card get it, and so does the push to the
    Hub (intercepted at huggingface_hub's HfApi, as tests/test_hub.py does)."""
    from huggingface_hub import HfApi

    out = tmp_path / "out"
    built, uploads = [], []
    init = RunDir.__init__
    monkeypatch.setattr(RunDir, "__init__", lambda self, root: built.append(Path(root)) or init(self, root))
    monkeypatch.setattr(HfApi, "create_repo", lambda self, repo_id, **kwargs: None)
    monkeypatch.setattr(HfApi, "upload_folder", lambda self, **kwargs: uploads.append(kwargs["folder_path"]))
    monkeypatch.setenv("HF_TOKEN", "hf_not_a_real_token")
    extra = {"push_to_hub": True, "hub.repo_id": "me/one-run-dir"} if push else {}
    overrides = tiny_image_overrides(*color_data, out, **{"train.checkpoint_every_steps": 6, **extra})
    result = train(load_config(None, overrides))
    assert [root for root in built if root.resolve() == out.resolve()] == [out]
    assert uploads == ([str(out)] if push else [])
    assert RunDir(out).checkpoint_dirs() and (result.output_dir / RunDir.CARD).is_file()


def test_the_log_states_when_training_started_and_what_the_first_step_took_once(color_data, tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="hf_transfer"):
        train(load_config(None, tiny_image_overrides(*color_data, tmp_path / "out")))
    said = re.findall(
        r"Training started ([\d.]+) s after the process did .*the first optimizer step took ([\d.]+) s", caplog.text
    )
    assert len(said) == 1  # three epochs, one first step
    started, step = map(float, said[0])
    assert 0 < started and started + step < time.time() - psutil.Process().create_time()


@pytest.mark.parametrize("name", ["linear", "cosine", "constant"])
@pytest.mark.parametrize(("warmup", "total"), [(0, 1), (3, 20), (2, 7), (0, 13)])
def test_the_schedule_gives_transformers_numbers_without_importing_it(name, warmup, total):
    from transformers import get_scheduler

    def rates(make) -> list[float]:
        optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.3)
        scheduler = make(optimizer)
        out = []
        for _ in range(total + 2):
            out.append(scheduler.get_last_lr()[0])
            optimizer.step()
            scheduler.step()
        return out

    ours = rates(lambda o: lr_schedule(name, o, warmup, total))
    assert ours == rates(lambda o: get_scheduler(name, o, num_warmup_steps=warmup, num_training_steps=total))


def test_the_training_modules_import_neither_peft_nor_the_trainer():
    """transformers.optimization (get_scheduler) imports the Trainer's utilities and peft: about a second
    before every run's first step."""
    code = (
        "import hf_transfer.train, sys; print([m for m in ('peft', 'transformers.trainer_utils') if m in sys.modules])"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["[]"]


def test_a_run_without_lora_imports_neither_peft_nor_scikit_learn(color_data, tmp_path):
    """Saving the model and writing its card ask whether it is a peft model without importing peft; the
    metrics, the per-class report and the confusion-matrix picture are counted with NumPy and drawn with
    matplotlib, without `sklearn.metrics` (1.5-2.5 s of every run, paid at the first evaluation)."""
    overrides = tiny_image_overrides(*color_data, tmp_path / "out", **{"train.epochs": 1})
    code = (
        "import sys\nfrom hf_transfer import load_config, train\n"
        f"train(load_config(None, {overrides!r}))\nprint([m for m in ('peft', 'sklearn') if m in sys.modules])"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines()[-1] == "[]"
    out = tmp_path / "out"
    assert (out / "model.safetensors").is_file() and (out / "README.md").is_file()
    report = json.loads(RunDir(out).eval_report("best_model_validation").read_text())
    assert sum(map(sum, report["confusion_matrix"])) == report["num_examples"] > 0
    assert RunDir(out).confusion.is_file()


def test_the_log_splits_the_training_time_and_names_evaluation_when_it_costs(color_data, tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="hf_transfer"):
        train(load_config(None, tiny_image_overrides(*color_data, tmp_path / "out")))
    split = re.findall(
        r"Training took ([\d.]+) s: steps ([\d.]+) s, 3 evaluation\(s\) ([\d.]+) s, checkpoints ([\d.]+) s", caplog.text
    )
    assert len(split) == 1
    runtime, steps, evaluation, checkpoints = map(float, split[0])
    # Shown to 0.1 s: a tiny model's checkpoints (and, on a quiet machine, its evaluations) round to 0.0.
    assert steps > 0 and steps + evaluation + checkpoints == pytest.approx(runtime, abs=0.2)
    # The advice, from the share: 30 of 100 s on 290 examples every epoch of 20 steps; none at 10 of 100 s.
    advice = evaluation_advice(100.0, 30.0, 290, 20, None)
    assert advice == (
        "Evaluation took 30% of the training time (290 validation examples every epoch of 20 steps): evaluate less "
        "often (train.eval_every_steps above 20) or on fewer examples (data.max_eval_samples)."
    )
    assert "every 50 steps" in evaluation_advice(100.0, 40.0, 290, 20, 50)
    assert evaluation_advice(100.0, 10.0, 290, 20, None) is None


def test_reading_image_folders_asks_fsspec_for_no_file(color_data, tmp_path, monkeypatch):
    """A guard: before the folders were listed once each (os.walk) and datasets' split patterns matched on that
    listing, resolving the data files of 670 + 290 images took 2,864 fsspec `ls` and 132,448 `info` calls
    (measured on the code before commit 36d6f3d); now none."""
    from fsspec.implementations.local import LocalFileSystem
    from fsspec.spec import AbstractFileSystem

    from hf_transfer.data import splits as data_lib

    calls = []
    for cls in (AbstractFileSystem, LocalFileSystem):
        for name in ("info", "ls"):
            original = vars(cls)[name]
            monkeypatch.setattr(cls, name, lambda *a, _f=original, _n=name, **k: calls.append(_n) or _f(*a, **k))
    config = load_config(None, tiny_image_overrides(*color_data, tmp_path / "o", **{"data.cache_dir": tmp_path}))
    splits = data_lib.load_splits(config, ADAPTERS.get(config.task)(config).inputs, None)
    assert (len(splits.train), len(splits.validation)) == (49, 18)
    assert calls == []


def test_timm_inputs_are_channels_last_on_a_cpu_with_the_same_logits(color_data, tmp_path):
    """oneDNN's convolutions run faster on NHWC inputs (measured 1.15-1.76x per training step for EfficientNet
    at 128-224 px on 2 cores); the weights keep their layout, so what is saved does not change."""
    config = load_config(None, tiny_image_overrides(*color_data, tmp_path / "o"))
    adapter = ADAPTERS.get(config.task)(config)
    model = adapter.models.build_model(["blue", "green", "red"]).eval()
    pixels = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    x = adapter.models.backend.normalise(pixels)
    assert x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    with torch.no_grad():
        assert torch.allclose(adapter.models.logits(model, {"pixel_values": pixels}), model(x.contiguous()), atol=1e-5)
    assert all(p.is_contiguous() for p in model.parameters())
