"""Scaling out: multi-node launches, FSDP, the shipped accelerate configs, automatic batch size."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import pickle
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import failure_lines, tiny_image_overrides
from safetensors.torch import load_file

from hf_transfer import load_config, train
from hf_transfer.core.errors import RunDirError
from hf_transfer.engine.checkpoints import verify_checkpoint

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


def _launch_with_config(config: str, processes: int, overrides: list[str], **env: str) -> subprocess.CompletedProcess:
    """`accelerate launch --config_file configs/accelerate/CONFIG -m hf_transfer train OVERRIDES`."""
    cmd = [*LAUNCH, "--config_file", str(ROOT / "configs" / "accelerate" / config), "--num_processes", str(processes)]
    cmd += ["--main_process_port", str(_free_port()), "-m", "hf_transfer", "train", *overrides]
    return subprocess.run(cmd, capture_output=True, text=True, env=_cpu_env(**env), timeout=600)


# ------------------------------------------------------------------------------------ the loader's position


@pytest.mark.slow  # two launches of two CPU processes: about a minute
def test_two_processes_share_one_loader_position_and_resume_mid_epoch_exactly(color_data, tmp_path):
    """Issue 19's one loader protocol under DDP, map-style: the position every process shares (one seeded order,
    sharded by Accelerate) is in every checkpoint, written once by the main process (one epoch of 49 examples:
    6 global batches of 2 x 4); resumed from step 8 (epoch 1, its second batch), both processes read it and the
    run ends with the weights of the uninterrupted one."""
    train_dir, val_dir = color_data
    common = {"train.epochs": 2, "train.batch_size": 4, "train.checkpoint_every_steps": 2}
    common |= {"train.save_total_limit": 20, "train.mixed_precision": "'no'"}
    full = _launch_with_config("ddp.yaml", 2, tiny_image_overrides(train_dir, val_dir, tmp_path / "full", **common))
    assert full.returncode == 0, failure_lines(full.stderr)
    step_8 = tmp_path / "full" / "checkpoints" / "step_0000008"
    assert sorted(path.name for path in step_8.glob("loader_state_*")) == ["loader_state_0.json"]
    position = json.loads((step_8 / "loader_state_0.json").read_text())
    assert (position["kind"], position["epoch"], position["batches"], position["processes"]) == ("map", 1, 2, 2)
    extra = {**common, "train.resume_from_checkpoint": str(step_8)}
    resumed = _launch_with_config(
        "ddp.yaml", 2, tiny_image_overrides(train_dir, val_dir, tmp_path / "resumed", **extra)
    )
    assert resumed.returncode == 0, failure_lines(resumed.stderr)
    metrics = [json.loads((tmp_path / name / "metrics.json").read_text()) for name in ("full", "resumed")]
    assert metrics[0]["global_step"] == metrics[1]["global_step"] == 12
    a, b = (load_file(str(tmp_path / name / "model.safetensors")) for name in ("full", "resumed"))
    assert all(torch.equal(a[k], b[k]) for k in a)


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
    from hf_transfer.config.schema import TrainConfig
    from hf_transfer.engine.loop import Engine

    for variable in ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    Engine(TrainConfig(lr=1e-3, log_with=[]), tmp_path).close()
    assert "trains alone although MASTER_ADDR is set" in caplog.text
    assert "--multi_gpu" in caplog.text


# ------------------------------------------------------------------------------- accelerate configs


# What each shipped accelerate config must say: its distributed type, and entries of its own section.
ACCELERATE_CONFIGS = {
    "ddp.yaml": ("MULTI_GPU", None, {}),
    "fsdp.yaml": ("FSDP", "fsdp_config", {"fsdp_version": 2, "fsdp_state_dict_type": "SHARDED_STATE_DICT"}),
    "deepspeed_zero2.yaml": ("DEEPSPEED", "deepspeed_config", {"zero_stage": 2}),
}


@pytest.mark.parametrize("path", sorted((ROOT / "configs" / "accelerate").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_accelerate_configs_load_with_accelerates_own_loader(path):
    from accelerate.commands.config.config_args import load_config_from_file

    kind, section, expected = ACCELERATE_CONFIGS[path.name]
    config = load_config_from_file(str(path))
    assert config.distributed_type.value == kind and config.num_machines == 1 and not config.use_cpu
    assert expected.items() <= (getattr(config, section) if section else {}).items()


# ------------------------------------------------------------------------------------------ FSDP


class _RunsCode:
    """A pickle that runs a command when loaded: what the checkpoint checks must stop."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_fsdp2_on_cpu_restores_the_best_weights_and_its_sharded_checkpoint_is_checked(tmp_path):
    """torch's FSDP2 runs on the CPU over gloo (Accelerate does not route FSDP there): the engine's FSDP steps,
    on a LoRA BERT sharded over 2 processes, bring back exactly the best weights, sharded and in the plain
    copy; the checkpoint in save_state's sharded layout passes the resume check, and a tampered one does not."""
    out = tmp_path / "fsdp"
    out.mkdir()
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_free_port())]
    done = subprocess.run(
        [*cmd, str(ROOT / "tests" / "fsdp_worker.py"), str(out)],
        capture_output=True,
        text=True,
        env=_cpu_env(),
        timeout=600,
    )
    assert done.returncode == 0, failure_lines(done.stderr)
    result = json.loads((out / "result.json").read_text())
    best, moved, restored, plain = (torch.tensor(result[k]) for k in ("best", "moved", "restored", "plain"))
    assert not torch.allclose(moved, best, atol=1e-3)  # training went on past the best weights
    assert torch.allclose(restored, best, atol=1e-6) and torch.allclose(plain, best, atol=1e-6)
    assert result["meta_left"] == []

    checkpoint = out / "checkpoint"
    verify_checkpoint(checkpoint)  # model and optimizer folders, non-tensor entries (lr, betas, ...) included

    marker = tmp_path / "ran"
    optimizer = checkpoint / "optimizer_0"
    with open(optimizer / ".metadata", "rb") as file:
        metadata = pickle.load(file)  # the test's own, trusted file
    # A non-tensor entry (the learning rate) swapped for a pickle that runs code.
    index = next(i for i in metadata.storage_data if i.fqn.endswith("param_groups.0.lr"))
    info = metadata.storage_data[index]
    shard = optimizer / info.relative_path
    payload = io.BytesIO()
    torch.save(_RunsCode(marker), payload)
    metadata.storage_data[index] = dataclasses.replace(
        info, offset=shard.stat().st_size, length=len(payload.getvalue())
    )
    with open(shard, "ab") as file:
        file.write(payload.getvalue())
    with open(optimizer / ".metadata", "wb") as file:
        pickle.dump(metadata, file)
    with pytest.raises(RunDirError, match="optimizer_0 does not read as plain tensors"):
        verify_checkpoint(checkpoint)
    # The metadata itself swapped for one.
    (optimizer / ".metadata").write_bytes(pickle.dumps(_RunsCode(marker)))
    with pytest.raises(RunDirError, match=r"UnpicklingError: posix.system is not part of"):
        verify_checkpoint(checkpoint)
    assert not marker.exists()


def test_the_fsdp_config_on_cpu_is_refused_not_run_as_ddp(color_data, tmp_path):
    """Accelerate 1.15 turns FSDP on only over a GPU backend: on CPUs (gloo) the FSDP config would train a
    whole model per process under DDP. The run says so and stops."""
    train_dir, val_dir = color_data
    done = _launch_with_config("fsdp.yaml", 2, tiny_image_overrides(train_dir, val_dir, tmp_path / "run"))
    assert done.returncode != 0  # each process stops with the error; torchrun exits 1
    assert "asks for FSDP (ACCELERATE_USE_FSDP=true) but Accelerate runs this process as MULTI_CPU" in done.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.skipif(
    not torch.cuda.is_available(), reason="Accelerate runs FSDP only on GPUs (on CPUs it is refused, test above)"
)
@pytest.mark.parametrize("strategy", ["full", "lora"])
def test_fsdp_trains_saves_the_gathered_best_model_and_resumes_from_sharded_checkpoints(strategy, color_data, tmp_path):
    """FSDP2 through configs/accelerate/fsdp.yaml (a tiny ViT: its layers are FSDP units): the saved model is
    the best one, whole; checkpoints are sharded; a resume from one ends where the uninterrupted run ends."""
    from conftest import write_tiny_vit

    from hf_transfer.inference import evaluate_run, load_run

    write_tiny_vit(tmp_path / "vit")
    train_dir, val_dir = color_data
    processes = min(torch.cuda.device_count(), 2)
    common = {"model": tmp_path / "vit", "strategy": strategy, "train.lr": 0.01, "train.epochs": 2}
    common["train.mixed_precision"] = "'no'"  # fp32, as the evaluation of the saved model below
    common |= {"train.checkpoint_every_steps": 2, "train.save_total_limit": 20, "train.batch_size": 8 // processes}
    done = _launch_with_config(
        "fsdp.yaml",
        processes,
        tiny_image_overrides(train_dir, val_dir, tmp_path / "a", **common),
        ACCELERATE_USE_CPU="0",
    )
    assert done.returncode == 0, failure_lines(done.stderr)
    metrics = json.loads((tmp_path / "a" / "metrics.json").read_text())
    first = tmp_path / "a" / "checkpoints" / "step_0000002"
    assert (first / "pytorch_model_fsdp_0" / ".metadata").is_file() and not (first / "model.safetensors").exists()
    report, _ = evaluate_run(load_run(tmp_path / "a"), str(val_dir))
    assert report["metrics"]["accuracy"] == metrics["accuracy"]  # the saved model is the best one, whole

    crashed = tmp_path / "b"  # a crash after step 8 (epoch 0 has 6 steps)
    shutil.copytree(tmp_path / "a" / "checkpoints", crashed / "checkpoints")
    for checkpoint in (crashed / "checkpoints").glob("step_*"):
        if int(checkpoint.name.split("_")[1]) > 8:
            shutil.rmtree(checkpoint)
    resume = tiny_image_overrides(train_dir, val_dir, crashed, **common, **{"train.resume_from_checkpoint": "latest"})
    done = _launch_with_config("fsdp.yaml", processes, resume, ACCELERATE_USE_CPU="0")
    assert done.returncode == 0, failure_lines(done.stderr)
    resumed = json.loads((crashed / "metrics.json").read_text())
    assert resumed["global_step"] == metrics["global_step"]
    assert [round(h["loss"], 4) for h in resumed["history"]] == [round(h["loss"], 4) for h in metrics["history"]]


# ---------------------------------------------------------------------------- automatic batch size


def _out_of_memory_above(monkeypatch, limit: int, after: int = 0) -> None:
    """The tiny EfficientNet's training forward fails as CUDA does when out of memory, for batches above `limit`
    from the `after`+1-th such forward on (the earlier ones train: a retry must undo them)."""
    from timm.models.efficientnet import EfficientNet

    forward, seen = EfficientNet.forward, [0]

    def failing(self, x):
        if self.training and x.shape[0] > limit:
            seen[0] += 1
            if seen[0] > after:
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (simulated)")
        return forward(self, x)

    monkeypatch.setattr(EfficientNet, "forward", failing)


def test_auto_find_batch_size_halves_the_batch_doubles_accumulation_and_changes_nothing_else(
    color_data, tmp_path, monkeypatch, caplog
):
    """Out of memory at batch 8 after two optimizer steps: the fit starts again at 4 x 2 from the same weights and
    random state, and ends exactly where a run started at 4 x 2 ends."""
    _out_of_memory_above(monkeypatch, limit=4, after=2)
    train_dir, val_dir = color_data
    common = {"strategy": "full", "train.epochs": 2}
    auto = train(
        load_config(
            None,
            tiny_image_overrides(
                train_dir, val_dir, tmp_path / "auto", **common, **{"train.auto_find_batch_size": True}
            ),
        )
    )
    started = {"train.batch_size": 4, "train.gradient_accumulation_steps": 2}
    direct = train(
        load_config(None, tiny_image_overrides(train_dir, val_dir, tmp_path / "direct", **common, **started))
    )

    assert (auto.fit.batch_size, auto.fit.gradient_accumulation_steps) == (4, 2)
    assert (auto.metrics["batch_size"], auto.metrics["gradient_accumulation_steps"]) == (4, 2)
    assert "Out of memory at a per-device batch of 8: starting again at 4 x accumulation 2" in caplog.text
    assert auto.metrics["global_step"] == direct.metrics["global_step"] == 12
    assert [h["loss"] for h in auto.metrics["history"]] == pytest.approx([h["loss"] for h in direct.metrics["history"]])
    assert auto.metrics["accuracy"] == direct.metrics["accuracy"]
    a, b = auto.model.state_dict(), direct.model.state_dict()
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-6) for k in a)


def test_auto_find_batch_size_stops_at_one_with_the_ways_out(color_data, tmp_path, monkeypatch):
    from hf_transfer.core.errors import ConfigError
    from hf_transfer.engine.autobatch import smaller_batches

    assert (list(smaller_batches(32)), list(smaller_batches(6)), list(smaller_batches(5))) == (
        [16, 8, 4, 2, 1],
        [3, 1],
        [1],
    )
    _out_of_memory_above(monkeypatch, limit=0)
    train_dir, val_dir = color_data
    overrides = tiny_image_overrides(
        train_dir, val_dir, tmp_path / "run", strategy="full", **{"train.auto_find_batch_size": True}
    )
    with pytest.raises(ConfigError, match="even at a per-device batch of 1 .*mixed_precision=bf16"):
        train(load_config(None, overrides))
