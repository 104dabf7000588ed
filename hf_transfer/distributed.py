"""How a run is spread over processes: what the launch gave, checked against what was asked.

Accelerate reads the launch from the environment, and a launch that looks right can start something
else without a word (accelerate 1.15): `accelerate launch --cpu --num_processes N` (or `--num_machines N`)
without `--mpirun_hostfile` starts each machine's script once, alone: the CPU launcher spreads processes
only through mpirun. Several CPU processes go through torchrun instead: `--multi_gpu` with
`ACCELERATE_USE_CPU=1`.
"""

from __future__ import annotations

import logging
import os

from accelerate import Accelerator

logger = logging.getLogger(__name__)

_WORLD_SIZE = ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")


def check_launch(accelerator: Accelerator) -> None:
    """Warn about a process that trains alone although its launch meant several."""
    alone = accelerator.num_processes == 1 and not any(os.environ.get(v) for v in _WORLD_SIZE)
    if alone and os.environ.get("MASTER_ADDR"):
        logger.warning(
            "This process trains alone although MASTER_ADDR is set: `accelerate launch --cpu` with several "
            "processes or machines starts each one by itself unless mpirun spreads them (--mpirun_hostfile). "
            "For several CPU processes use `ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes N`."
        )
