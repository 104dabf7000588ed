"""How a run is spread over processes: what the launch gave, checked against what was asked, and
what changes when the parameters are sharded (FSDP).

Accelerate reads the launch from the environment. N processes launched on a machine without GPUs
(`accelerate launch --multi_gpu --num_processes N`, torchrun) get a process group over the CPUs only when
ACCELERATE_USE_CPU=1 says so; otherwise Accelerate sets each of them up alone. `process_state` asks for the
CPU process group itself in that case (`PartialState(cpu=True)`, what the variable does), so such a launch
simply trains on the CPUs, and says so once.

Two launches that look right still start something else without a word (accelerate 1.15):
- `accelerate launch --cpu --num_processes N` (or `--num_machines N`) without `--mpirun_hostfile` starts
  each machine's script once, alone: the CPU launcher spreads processes only through mpirun. Several
  CPU processes go through torchrun instead: `--multi_gpu` with `ACCELERATE_USE_CPU=1`.
- an FSDP or DeepSpeed config where Accelerate finds no GPU: it turns FSDP/DeepSpeed on only over a
  GPU-class backend, so on the CPU (gloo) every process would hold the whole model under DDP.

Under FSDP (version 2: it shards the model in place) no process holds the whole model, so what needs it
goes through a full state dict: the best weights are gathered to the main process
(`Accelerator.get_state_dict`, every process takes part) and loaded back shard by shard; the run's
artifacts are saved from a plain copy of the model that takes no memory until the best weights fill it
(`structure_copy`). LoRA needs no wrap policy of its own there: FSDP2 shards parameter by parameter, so
frozen and trainable weights may share a unit (peft's `fsdp_auto_wrap_policy` exists for FSDP1, and
Accelerate's FSDP2 path applies only its transformer/size policies: given peft's, it would shard the
whole model as one unit).
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Mapping

import torch
from accelerate import Accelerator, PartialState
from accelerate.state import AcceleratorState
from accelerate.utils import (
    DistributedType,
    get_distributed_backend,
    get_torch_accelerator_backend,
    parse_flag_from_env,
)
from torch import nn

from ..core.errors import ConfigError

logger = logging.getLogger(__name__)

# What `accelerate launch` asks for through the environment, and the type Accelerate must then run.
_ASKED = {"ACCELERATE_USE_FSDP": DistributedType.FSDP, "ACCELERATE_USE_DEEPSPEED": DistributedType.DEEPSPEED}
# Where launchers put the number of processes: torchrun and `accelerate launch --multi_gpu` (WORLD_SIZE),
# MPI (the others). The same variables Accelerate reads to set up a CPU process group.
WORLD_SIZE_VARIABLES = ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")
_announced = False  # the automatic CPU process group is logged once per process


def launched_processes(environ: Mapping[str, str] = os.environ) -> tuple[str, int]:
    """(the variable, the number) of processes a launcher started, per the environment; ("", 1) for none."""
    sizes = {name: environ[name] for name in WORLD_SIZE_VARIABLES if environ.get(name, "").strip().isdigit()}
    return max(((n, int(v)) for n, v in sizes.items()), key=lambda item: item[1], default=("", 1))


def cpu_launch(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether this process joins a process group over the CPUs: ACCELERATE_USE_CPU says so, or several
    processes were launched and this machine has no accelerator with a distributed backend (no GPU), where
    Accelerate, asked for nothing, would set each process up alone."""
    if parse_flag_from_env("ACCELERATE_USE_CPU"):
        return True
    if launched_processes(environ)[1] <= 1:
        return False
    device_type, _ = get_torch_accelerator_backend()
    return device_type is None or get_distributed_backend(device_type) is None


def process_state() -> PartialState:
    """Accelerate's state of this process (the first call sets it up; Accelerators built later share it):
    over the CPUs where `cpu_launch` says so. Logged once, by the main process, when that was not asked for."""
    global _announced
    cpu = cpu_launch()
    state = PartialState(cpu=cpu)
    if cpu and not parse_flag_from_env("ACCELERATE_USE_CPU") and state.num_processes > 1 and not _announced:
        _announced = True
        if state.is_main_process:
            logger.info(
                "%d processes launched on a machine without a GPU: they train together on the CPUs (a %s process "
                "group), as ACCELERATE_USE_CPU=1 sets up",
                state.num_processes,
                state.backend,
            )
    return state


def release_accelerator_state() -> None:
    """Forget the Accelerator's settings (mixed precision, ...), keeping the process group, so that the next
    Accelerator of this process may choose others (Accelerate refuses to change them otherwise: "AcceleratorState
    has already been initialized"). Accelerate has no public way to do this (checked in accelerate 1.16.0):
    `AcceleratorState._reset_state` is what its own test harness calls between tests
    (`accelerate.test_utils.testing.AccelerateTestCase.tearDown`). Here, and only here, so that a change of
    that private method is one place to follow."""
    AcceleratorState._reset_state()


def check_distributed_setup(accelerator: Accelerator) -> None:
    """Refuse a sharded launch that Accelerate would run unsharded, FSDP1 and DeepSpeed ZeRO-3 (FSDP2 is the
    sharded path); warn about a process left alone."""
    for variable, wanted in _ASKED.items():
        if parse_flag_from_env(variable) and accelerator.distributed_type != wanted:
            raise ConfigError(
                f"The launch asks for {wanted.value} ({variable}=true) but Accelerate runs this process as "
                f"{accelerator.distributed_type.value} on {accelerator.device.type}: Accelerate runs "
                f"{wanted.value} only on GPUs. Launch it on a machine with GPUs, or use configs/accelerate/ddp.yaml "
                "(on CPUs: ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes N)."
            )
    if is_sharded(accelerator) and accelerator.state.fsdp_plugin.fsdp_version != 2:
        # FSDP1 wraps the model, and the unwrapped module cannot run alone; FSDP2 shards it in place.
        raise ConfigError(
            "FSDP version 1 is not supported: set fsdp_version: 2 in the accelerate config "
            "(configs/accelerate/fsdp.yaml), or --fsdp_version 2."
        )
    if accelerator.distributed_type == DistributedType.DEEPSPEED and accelerator.state.deepspeed_plugin.zero_stage == 3:
        raise ConfigError(
            "DeepSpeed ZeRO-3 partitions the parameters, which this engine restores only under FSDP: use "
            "configs/accelerate/fsdp.yaml to shard the model, or ZeRO-2 (configs/accelerate/deepspeed_zero2.yaml)."
        )
    alone = accelerator.num_processes == 1 and not any(os.environ.get(v) for v in WORLD_SIZE_VARIABLES)
    if alone and os.environ.get("MASTER_ADDR"):
        logger.warning(
            "This process trains alone although MASTER_ADDR is set: `accelerate launch --cpu` with several "
            "processes or machines starts each one by itself unless mpirun spreads them (--mpirun_hostfile). "
            "For several CPU processes use `ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes N`."
        )


def is_sharded(accelerator: Accelerator) -> bool:
    """Whether each process holds only a shard of the parameters (FSDP, either version)."""
    return accelerator.distributed_type == DistributedType.FSDP


def structure_copy(model: nn.Module) -> nn.Module:
    """A copy of `model` whose parameters take no memory (meta device), to be filled later with a full
    state dict through `load_state_dict(..., assign=True)`. Buffers are copied as they are: they are small,
    and the non-persistent ones are in no state dict."""
    memo = {
        id(p): nn.Parameter(torch.empty_like(p, device="meta"), requires_grad=p.requires_grad)
        for p in model.parameters()
    }
    return copy.deepcopy(model, memo)


def load_full_state_dict(model: nn.Module, state: dict[str, torch.Tensor], is_main_process: bool) -> None:
    """Load a full state dict, read on the main process only (`state` is ignored elsewhere), into a sharded
    model: each process receives its shard. Every process calls it."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict
    from torch.distributed.fsdp import FSDPModule

    # FSDP2 leaves the root's parameters gathered after a forward without backward (an evaluation): shard
    # them again, or they load as plain tensors against sharded ones.
    for module in model.modules():
        if isinstance(module, FSDPModule):
            module.reshard()
    options = StateDictOptions(full_state_dict=True, broadcast_from_rank0=True)
    set_model_state_dict(model, state if is_main_process else {}, options=options)
