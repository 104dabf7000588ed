"""Peak memory of a streamed training run as the data set grows: it should not grow with it.

    python benchmarks/streaming_rss.py                          # N = 1000 and 10N images; table appended to RESULTS.md
    python benchmarks/streaming_rss.py --rows 200 --steps 20 --no-write   # a short look

Writes N and factor x N tiny images (32 px PNG, 3 colour classes) as parquet shards of 250 rows, the
Hub's file names (train-*.parquet, one validation file of 60 rows), then runs the same streamed training
on each, `python -m hf_transfer train ... data.streaming=true train.max_steps=S` (test_efficientnet, random
init, batch 16, no DataLoader workers), as its own process. Its peak resident memory is the kernel's
account of that process (`os.wait4`'s ru_maxrss). With `--map-style` the same runs also go through the
map-style path (data.streaming=false, max_steps the same), for contrast.

The steps are fixed, so every run trains on the same number of examples whatever the data's size: what
may grow with the data is only what is loaded or held because the data is larger. S x batch is made to
cover more than one pass over N, so the smaller set is read to its end and reshuffled too.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from machine import machine_line, results_section

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SHARD_ROWS = 250
COLOURS = ["red", "green", "blue"]


def write_shards(folder: Path, rows: int, seed: int) -> None:
    """`rows` learnable images (the class is the dominant channel) as parquet shards of SHARD_ROWS, written
    one shard at a time so that the writer never holds more than one."""
    from datasets import ClassLabel, Dataset, Features
    from datasets import Image as ImageFeature
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    features = Features({"image": ImageFeature(), "label": ClassLabel(names=COLOURS)})
    rng = np.random.default_rng(seed)
    shards = (rows + SHARD_ROWS - 1) // SHARD_ROWS
    for k in range(shards):
        count = min(SHARD_ROWS, rows - k * SHARD_ROWS)
        pixels = rng.integers(0, 90, size=(count, 32, 32, 3), dtype=np.uint8)
        labels = [i % 3 for i in range(count)]
        for i, label in enumerate(labels):
            pixels[i, ..., label] = rng.integers(160, 255, size=(32, 32), dtype=np.uint8)
        shard = Dataset.from_dict({"image": [Image.fromarray(p) for p in pixels], "label": labels}, features=features)
        shard.to_parquet(str(folder / f"train-{k:05d}-of-{shards:05d}.parquet"))
    validation = Dataset.from_dict(
        {"image": [Image.fromarray(p) for p in rng.integers(0, 255, size=(60, 32, 32, 3), dtype=np.uint8)]}
        | {"label": [i % 3 for i in range(60)]},
        features=features,
    )
    validation.to_parquet(str(folder / "validation-00000-of-00001.parquet"))


def run(data: Path, out: Path, steps: int, streaming: bool) -> dict:
    """One training process; its peak RSS (MiB) and wall time."""
    args = [
        "task=image-classification",
        "model=test_efficientnet",
        "pretrained=false",
        f"data.train={data}",
        f"data.streaming={str(streaming).lower()}",
        f"data.cache_dir={out / 'cache'}",
        "data.image_size=32",
        "data.num_workers=0",
        f"train.max_steps={steps}",
        "train.batch_size=16",
        "train.lr=0.01",
        "train.log_with=[]",
        "train.progress_bar=false",
        f"output_dir={out / 'run'}",
        "overwrite=true",
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_DATASETS_CACHE": str(out / "hf")}
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(out / "log.txt", "w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "hf_transfer", "train", *args], stdout=log, stderr=log, env=env
        )
        _, status, usage = os.wait4(process.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"training on {data} failed; see {out / 'log.txt'}")
    return {"peak_rss_mib": usage.ru_maxrss / 1024, "wall_s": time.perf_counter() - start}


def size_mib(folder: Path) -> float:
    return sum(f.stat().st_size for f in folder.glob("*.parquet")) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1000, help="N: training images of the smaller set.")
    parser.add_argument("--factor", type=int, default=10, help="The larger set has factor x N images.")
    parser.add_argument("--steps", type=int, default=80, help="train.max_steps of every run (batch 16).")
    parser.add_argument("--out", default="runs/streaming_rss", help="Data, runs and logs.")
    parser.add_argument("--map-style", action="store_true", help="Also run each set with data.streaming=false.")
    parser.add_argument("--no-write", action="store_true", help="Do not append to benchmarks/RESULTS.md.")
    args = parser.parse_args()
    out = Path(args.out).resolve()
    modes = [True, False] if args.map_style else [True]
    rows = []
    for count in (args.rows, args.rows * args.factor):
        data = out / f"data_{count}"
        if not data.is_dir():
            write_shards(data, count, seed=0)
        for streaming in modes:
            mode = "streaming" if streaming else "map-style"
            result = run(data, out / f"{mode}_{count}", args.steps, streaming)
            shards = len(list(data.glob("train-*.parquet")))
            rows.append(
                f"| {mode} | {count:,} ({shards} shards, {size_mib(data):.1f} MiB) | {args.steps} | "
                f"{result['peak_rss_mib']:.0f} MiB | {result['wall_s']:.0f} s |"
            )
            print(rows[-1], flush=True)
    body = [
        f"Command: `python {' '.join(shlex.quote(a) for a in sys.argv)}`  ",
        f"Machine: {machine_line()}  ",
        "Each row: one `python -m hf_transfer train` process (test_efficientnet, random init, 32 px, batch 16, "
        "no DataLoader workers); peak RSS from `os.wait4` (ru_maxrss).",
        "",
        "| data | training images | optimizer steps | peak RSS | wall |",
        "| --- | --- | --- | --- | --- |",
        *rows,
        "",
    ]
    text = results_section("streaming: peak memory as the data grows", body)
    print(text)
    if not args.no_write:
        with open(HERE / "RESULTS.md", "a") as f:
            f.write(text)


if __name__ == "__main__":
    main()
