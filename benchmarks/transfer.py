"""Accuracy and speed measurements, run on demand (not part of the test suite).

    python benchmarks/transfer.py image          # Lite0 on digits: pretrained vs random init, 3 strategies
    python benchmarks/transfer.py image --quick  # fewer epochs

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

IMAGE = [ROOT / "tasks" / "digits_sample.yaml"]
CASES = {
    "image": [
        ("Lite0 pretrained, linear_probe", IMAGE + [ROOT / "configs" / "lite0_linear_probe.yaml"], []),
        (
            "Lite0 random init, linear_probe",
            IMAGE + [ROOT / "configs" / "lite0_linear_probe.yaml"],
            ["weights=null", "pretrained=false"],
        ),
        ("Lite0 pretrained, lora", IMAGE + [ROOT / "configs" / "lite0_lora.yaml"], []),
        ("Lite0 pretrained, full", IMAGE + [ROOT / "configs" / "lite0_full.yaml"], []),
    ],
}


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
        slug = name.lower().replace(",", "").replace(" ", "_")
        config = load_config(configs, [*overrides, *extra, f"output_dir={args.out}/{slug}", "train.progress_bar=false"])
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
