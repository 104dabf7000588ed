"""benchmarks/speed.py runs end to end on tiny models and prints every row (figures are not checked:
machines are noisy, and --quick models say nothing about speed)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ROWS = [
    "engine vs bare PyTorch loop, train samples/s",
    "end to end `train` vs hand-written script, wall",
    "engine vs transformers.Trainer, train samples/s",
    "cached vs uncached linear probe, wall",
    "cached vs uncached linear probe, accuracy difference",
    "image data path vs model step, samples/s",
    "audio data path vs model step, samples/s",
    "LoRA vs full (text), trainable parameters",
    "LoRA vs full (text), peak memory",
    "LoRA vs full (image), trainable parameters",
    "LoRA vs full (image), peak memory",
    "2 CPU processes vs 1, metrics difference",
    "2 CPU processes vs 1, train samples/s",
    # issue 20, at the sizes users train at (--quick: 32 px)
    "engine vs bare loop at 32 px, augmentation on, train samples/s",
    "engine vs bare loop at 32 px, augmentation off, train samples/s",
    "end to end `train` vs hand-written script at 32 px, wall",
    "time to training start over `python -c 'import torch'`",
    "cached probe vs hand-written probe, wall",
]


@pytest.mark.slow  # about 3 minutes: a dozen child processes each import torch (run with pytest -m slow)
def test_quick_run_prints_every_row(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # no spinning threads on a shared machine (see speed.py)
    cmd = [sys.executable, str(ROOT / "benchmarks" / "speed.py"), "--quick", "--no-write", "--out", str(tmp_path)]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]
    table = done.stdout[done.stdout.index("| measurement |") :]
    verdicts = r"(met|\*\*missed\*\*|recorded)"
    for name in ROWS:  # | name | value | goal | verdict | detail | load |
        row = re.search(rf"^\| {re.escape(name)} \| -?[\d.]+(x| pt| s) \| [^|]+ \| {verdicts} \|", table, re.M)
        assert row, f"no row {name!r} in:\n{table}"
    for loop in ("engine", "bare"):  # the per-phase table of the rows at real sizes
        for augmentation in ("on", "off"):
            assert re.search(rf"^\| 32 px \| {augmentation} \| {loop} \|( [\d-]+ \|){{6}}", table, re.M), table
    assert list(tmp_path.iterdir()) == []  # the work folder is removed
