"""Scaling out: multi-node launches, FSDP, the shipped accelerate configs, automatic batch size."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import failure_lines, tiny_image_overrides

from hf_transfer import load_config, train

ROOT = Path(__file__).resolve().parents[1]
LAUNCH = [sys.executable, "-m", "accelerate.commands.launch"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cpu_env(**extra: str) -> dict[str, str]:
    """Launched processes: on the CPU (gloo), offline, one thread each (the machine is shared)."""
    pythonpath = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    return {
        **os.environ,
        "ACCELERATE_USE_CPU": "1",
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": pythonpath,
        **extra,
    }


# ------------------------------------------------------------------------------------ multi-node


@pytest.mark.slow  # about a minute: three trainings, two of them launched processes
def test_two_nodes_match_one_process_and_only_the_global_main_writes(color_data, tmp_path):
    """Two "machines" of one CPU process each, rendezvousing on 127.0.0.1 as two nodes would on a network,
    train as one process with the same global batch does; every file of the run is written by global rank 0
    (rank 1 is its node's local main process too, so `is_local_main_process` would have written twice)."""
    train_dir, val_dir = color_data
    common = {"strategy": "linear_probe", "linear_probe.cache_features": False, "train.epochs": 2, "train.lr": 0.05}
    single = train(load_config(None, tiny_image_overrides(train_dir, val_dir, tmp_path / "one", **common)))

    run = tmp_path / "nodes"
    audit = tmp_path / "audit"
    audit.mkdir()
    overrides = tiny_image_overrides(train_dir, val_dir, run, **common, **{"train.batch_size": 4})
    env = _cpu_env(WRITE_AUDIT_ROOT=str(run), WRITE_AUDIT_DIR=str(audit))
    port = str(_free_port())
    nodes = []
    for rank in ("0", "1"):
        # --multi_gpu chooses torchrun's launcher (with ACCELERATE_USE_CPU=1 it runs on the CPU with gloo);
        # `--cpu` would take the MPI launcher, which without mpirun starts each node's process alone.
        cmd = [*LAUNCH, "--multi_gpu", "--num_machines", "2", "--machine_rank", rank, "--num_processes", "2"]
        cmd += ["--main_process_ip", "127.0.0.1", "--main_process_port", port]
        cmd += ["--mixed_precision", "no", "--dynamo_backend", "no", str(ROOT / "tests" / "write_audit.py"), "train"]
        nodes.append(subprocess.Popen(cmd + overrides, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    outputs = [node.communicate(timeout=600) for node in nodes]
    for node, (_, stderr) in zip(nodes, outputs, strict=True):
        assert node.returncode == 0, failure_lines(stderr.decode())

    two = json.loads((run / "metrics.json").read_text())
    assert two["global_step"] == single.metrics["global_step"] == 12  # 49 examples, 6 global batches of 8 an epoch
    assert abs(two["accuracy"] - single.metrics["accuracy"]) <= 0.01
    assert two["loss"] == pytest.approx(single.metrics["loss"], rel=1e-2)

    written = {
        rank: [json.loads(line) for line in (audit / f"rank{rank}.jsonl").read_text().splitlines()] for rank in (0, 1)
    }
    checkpoints = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert checkpoints == ["best", "step_0000006", "step_0000012"]
    renamed = [Path(event[2]).name for event in written[0] if event[0] == "os.rename"]
    # Every file lands under a temporary name and is renamed into place: the renames are the run's files.
    assert {"step_0000006", "step_0000012", "model.safetensors", "metrics.json", "config.yaml", "README.md"} <= set(
        renamed
    )
    # Rank 1 only makes the temporary checkpoint folder its own state goes into (accelerate's save_state).
    assert {event[0] for event in written[1]} <= {"os.mkdir"}, written[1]
    assert all(".tmp" in event[1] for event in written[1])


def test_a_process_left_alone_by_the_cpu_launcher_is_reported(tmp_path, monkeypatch, caplog):
    """`accelerate launch --cpu --num_processes 2` (no mpirun) sets MASTER_ADDR but starts the script once, alone."""
    from hf_transfer.config import TrainConfig
    from hf_transfer.engine import Engine

    for variable in ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    Engine(TrainConfig(lr=1e-3, log_with=[]), tmp_path).close()
    assert "trains alone although MASTER_ADDR is set" in caplog.text
    assert "--multi_gpu" in caplog.text
