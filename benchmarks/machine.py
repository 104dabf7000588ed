"""What every benchmark table states about where it ran: the machine, its load, the date."""

from __future__ import annotations

import os
import platform
from datetime import date
from pathlib import Path

import torch


def machine_line() -> str:
    """`uname -m`, usable cores, torch version, accelerator and the load average when asked."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    return (
        f"`uname -m` = {platform.machine()}, {cores} CPU cores, {device}; torch {torch.__version__}; "
        f"load average (1/5/15 min) {load} at the end"
    )


def results_section(title: str, body: list[str]) -> str:
    """A dated section for benchmarks/RESULTS.md."""
    return "\n".join([f"\n## {title} — {date.today().isoformat()}\n", *body, ""])


def publish(text: str, write: bool) -> None:
    """Print a results section and, when `write`, append it to benchmarks/RESULTS.md."""
    print(text)
    if write:
        with open(Path(__file__).resolve().parent / "RESULTS.md", "a") as f:
            f.write(text)
