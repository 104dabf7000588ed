"""How a run was launched: N processes that Accelerate sees as one are stopped; what a run used
(processes, mixed precision, batch per device, accumulation, effective batch) is recorded."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

import pytest
import torch
import yaml
from conftest import failure_lines, tiny_image_overrides

from hf_transfer import load_config, train
from hf_transfer.core.errors import LaunchError
from hf_transfer.engine.loop import check_launch

CPU, GPU = torch.device("cpu"), torch.device("cuda", 0)


def test_check_launch_stops_n_processes_seen_as_one_and_names_the_cpu_command():
    with pytest.raises(LaunchError, match=r"one of 2 launched \(WORLD_SIZE=2\).*same output_dir") as err:
        check_launch(1, CPU, {"WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2"})
    assert "ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 -m hf_transfer train" in str(err.value)
    with pytest.raises(LaunchError, match=r"PMI_SIZE=4.*--multi_gpu --num_processes 4 \.\.\.`, one process per GPU"):
        check_launch(1, GPU, {"PMI_SIZE": "4"})  # an MPI launch, seen from a GPU


@pytest.mark.parametrize(
    ("num_processes", "environ"),
    [(1, {}), (1, {"WORLD_SIZE": "1"}), (2, {"WORLD_SIZE": "2"}), (1, {"WORLD_SIZE": ""})],
    ids=["plain", "torchrun-1", "process-group-of-2", "empty"],
)
def test_check_launch_lets_consistent_launches_through(num_processes, environ):
    check_launch(num_processes, CPU, environ)


def test_multi_gpu_launch_on_cpus_trains_as_one_run(color_data, tmp_path):
    """The README's GPU command on a machine without GPUs, without ACCELERATE_USE_CPU: the two processes set
    up a process group over the CPUs themselves, train as one run, and the main process says so once."""
    train_dir, val_dir = color_data
    out = tmp_path / "two"
    overrides = tiny_image_overrides(train_dir, val_dir, out, **{"train.epochs": 1, "train.batch_size": 4})
    env = {k: v for k, v in os.environ.items() if k != "ACCELERATE_USE_CPU"}
    env.update(CUDA_VISIBLE_DEVICES="", HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    cmd += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "hf_transfer", "train"]
    result = subprocess.run(cmd + overrides, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, failure_lines(result.stderr)
    assert "ChildFailedError" not in result.stderr and "hf-transfer: error" not in result.stderr
    said = "2 processes launched on a machine without a GPU: they train together on the CPUs (a gloo process group)"
    assert result.stderr.count(said) == 1, result.stderr[-3000:]
    setup = json.loads((out / "run_info.json").read_text())["setup"]
    assert (setup["num_processes"], setup["distributed_type"], setup["effective_batch_size"]) == (2, "MULTI_CPU", 8)
    assert result.stdout.count("Finished:") == 1  # printed by the main process only


def test_a_one_process_run_records_what_it_used(color_data, tmp_path, caplog):
    """A plain run (no launcher) is let through and says what it trained with: in the log, in
    run_info.json, in config.yaml's resolved values and on the card."""
    train_dir, val_dir = color_data
    extra = {
        "strategy": "linear_probe",
        "train.epochs": 1,
        "train.batch_size": 4,
        "train.gradient_accumulation_steps": 2,
    }
    config = load_config(None, tiny_image_overrides(train_dir, val_dir, tmp_path / "run", **extra))
    assert config.train.mixed_precision is None  # left to Accelerate: its default here is "no"
    with caplog.at_level(logging.INFO, logger="hf_transfer"):
        result = train(config)
    expected = {
        "num_processes": 1,
        "distributed_type": "NO",
        "device": "cpu",
        "mixed_precision": "no",
        "batch_size_per_device": 4,
        "gradient_accumulation_steps": 2,
        "effective_batch_size": 8,
    }
    assert json.loads((result.output_dir / "run_info.json").read_text())["setup"] == expected
    written = yaml.safe_load((result.output_dir / "config.yaml").read_text())["train"]
    assert (written["mixed_precision"], written["gradient_accumulation_steps"]) == ("no", 2)
    described = "1 process (cpu), mixed precision no; batch 4 per device x 1 x 2 accumulation step(s) = 8 examples"
    assert any(described in record.getMessage() for record in caplog.records)
    card = (result.output_dir / "README.md").read_text()
    assert "\n- **Setup:** " + described + " per optimizer step.\n- **Training augmentation:**" in card


def test_fp16_on_a_cpu_trains_in_full_precision_and_is_recorded_so(color_data, tmp_path, caplog):
    """Accelerate takes mixed_precision=fp16 on a CPU but computes in fp32 (no autocast there): the run
    records what it computed in, everywhere, and says so once."""
    train_dir, val_dir = color_data
    extra = {"strategy": "linear_probe", "train.epochs": 1, "train.mixed_precision": "fp16"}
    config = load_config(None, tiny_image_overrides(train_dir, val_dir, tmp_path / "run", **extra))
    with caplog.at_level(logging.INFO, logger="hf_transfer"):
        result = train(config)
    setup = json.loads((result.output_dir / "run_info.json").read_text())["setup"]
    assert setup["mixed_precision"] == "no"
    assert yaml.safe_load((result.output_dir / "config.yaml").read_text())["train"]["mixed_precision"] == "no"
    card = (result.output_dir / "README.md").read_text()
    assert "mixed precision no;" in card and "fp16" not in card
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "fp16" in r.getMessage()]
    assert len(warnings) == 1 and "trains in full precision (fp32)" in warnings[0]
    assert any("Setup: 1 process (cpu), mixed precision no;" in r.getMessage() for r in caplog.records)
