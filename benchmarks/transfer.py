"""Accuracy and speed measurements, run on demand (not part of the test suite).

    python benchmarks/transfer.py image          # Lite0 on digits: pretrained vs random init, 3 strategies
    python benchmarks/transfer.py text           # MiniLM on the sentiment sample: pretrained vs random init
    python benchmarks/transfer.py audio          # tones -> dyads chained transfer vs random init
    python benchmarks/transfer.py image --quick  # 2 epochs per case

Each case is a real `train()` run; the table (with the command and machine) is appended to
benchmarks/RESULTS.md. Ratios come from runs made in the same invocation, on the same machine.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
import time
from datetime import date
from pathlib import Path

import torch

from hf_transfer import configure_logging, load_config, train

HERE = Path(__file__).parent
ROOT = HERE.parent

TASKS, RECIPES = ROOT / "tasks", ROOT / "configs"
RANDOM_INIT = ["weights=null", "pretrained=false"]
DIGITS, SENTIMENT = TASKS / "digits_sample.yaml", TASKS / "sentiment_sample.yaml"
TONES, DYADS = TASKS / "tones_sample.yaml", TASKS / "dyads_sample.yaml"
SOURCE_RUN = "model={out}/source_tones_from_scratch_full"  # the first audio case's output_dir
SCRATCH = ["model=pypi:tiny-wav2vec2", "pretrained=false"]  # the same architecture, randomly initialised
# suite -> [(name, config files, overrides)]; "{out}" is the suite's output folder, so a case can
# use an earlier case's run as its model (chained transfer).
CASES = {
    "image": [
        ("Lite0 pretrained, linear_probe", [DIGITS, RECIPES / "lite0_linear_probe.yaml"], []),
        ("Lite0 random init, linear_probe", [DIGITS, RECIPES / "lite0_linear_probe.yaml"], RANDOM_INIT),
        ("Lite0 pretrained, lora", [DIGITS, RECIPES / "lite0_lora.yaml"], []),
        ("Lite0 pretrained, full", [DIGITS, RECIPES / "lite0_full.yaml"], []),
    ],
    "text": [
        ("MiniLM pretrained, lora", [SENTIMENT, RECIPES / "minilm_lora.yaml"], []),
        ("MiniLM random init, lora", [SENTIMENT, RECIPES / "minilm_lora.yaml"], RANDOM_INIT),
        ("MiniLM pretrained, linear_probe", [SENTIMENT, RECIPES / "minilm_lora.yaml"], ["strategy=linear_probe"]),
        ("MiniLM pretrained, full", [SENTIMENT, RECIPES / "minilm_lora.yaml"], ["strategy=full", "train.lr=5e-5"]),
    ],
    "audio": [
        ("source: tones from scratch, full", [TONES, RECIPES / "tiny_wav2vec2_scratch.yaml"], []),
        ("dyads from the tones run, linear_probe", [DYADS, RECIPES / "audio_run_linear_probe.yaml"], [SOURCE_RUN]),
        ("dyads from random init, linear_probe", [DYADS, RECIPES / "audio_run_linear_probe.yaml"], SCRATCH),
        (
            "dyads from the tones run, full",
            [DYADS, RECIPES / "audio_run_linear_probe.yaml"],
            [SOURCE_RUN, "strategy=full", "train.lr=3e-3"],
        ),
        (
            "dyads from random init, full",
            [DYADS, RECIPES / "audio_run_linear_probe.yaml"],
            [*SCRATCH, "strategy=full", "train.lr=3e-3"],
        ),
    ],
}


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name.lower()).replace("__", "_").strip("_")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("suite", choices=sorted(CASES))
    parser.add_argument("--quick", action="store_true", help="2 epochs instead of the recipe's.")
    parser.add_argument("--out", default="runs/benchmarks", help="Where the runs are written.")
    args = parser.parse_args()
    configure_logging()

    rows = []
    for name, configs, overrides in CASES[args.suite]:
        extra = ["train.epochs=2"] if args.quick else []
        overrides = [o.format(out=args.out) for o in overrides]
        run_dir = f"{args.out}/{_slug(name)}"
        config = load_config(configs, [*overrides, *extra, f"output_dir={run_dir}", "train.progress_bar=false"])
        start = time.perf_counter()
        result = train(config)
        wall = time.perf_counter() - start
        m = result.metrics
        rows.append(
            f"| {name} | {m['accuracy']:.4f} | {m['f1_macro']:.4f} | {m['trainable_parameters']:,} | "
            f"{m['train_samples_per_second']:.1f} | {wall:.0f} s |"
        )
        print(rows[-1], flush=True)

    machine = f"{platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}, " + (
        torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    )
    table = "\n".join(
        [
            f"\n## {args.suite} — {date.today().isoformat()}\n",
            f"Command: `{' '.join(shlex.quote(a) for a in ['python', *sys.argv])}`  ",
            f"Machine: {machine}\n",
            "| case | accuracy | f1_macro | trainable params | train samples/s | wall (incl. data, eval, save) |",
            "| --- | --- | --- | --- | --- | --- |",
            *rows,
            "",
        ]
    )
    with open(HERE / "RESULTS.md", "a") as f:
        f.write(table)
    print(table)


if __name__ == "__main__":
    main()
