"""One process of the CPU FSDP2 check (`torchrun --nproc_per_node 2 tests/fsdp_worker.py OUT`).

Accelerate runs FSDP only on GPUs, but torch's FSDP2 (`fully_shard`) runs on the CPU over gloo: this
worker shards a tiny LoRA BERT as Accelerate's transformer-based policy does (each layer, then the root)
and puts the engine's FSDP steps through it: the plain structure copy taken before sharding, the best
weights gathered as `Accelerator.get_state_dict` gathers them under FSDP2 and saved as the engine saves
them, loaded back shard by shard, the plain copy filled with them, and a sharded checkpoint in the
layout `Accelerator.save_state` writes (torch.distributed.checkpoint, model and optimizer folders).
Writes OUT/result.json (rank 0) and OUT/checkpoint/.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from peft import LoraConfig, get_peft_model
from safetensors.torch import load_file, save_file
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
)
from torch.distributed.fsdp import fully_shard
from transformers import BertConfig, BertForSequenceClassification

from hf_transfer.engine.distributed import load_full_state_dict, structure_copy


def main(out: Path) -> None:
    dist.init_process_group("gloo")
    main_process = dist.get_rank() == 0
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=64, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=24, num_labels=3
    )
    lora = LoraConfig(r=4, target_modules=["query", "value"], modules_to_save=["classifier"], task_type="SEQ_CLS")
    model = get_peft_model(BertForSequenceClassification(config), lora)
    plain = structure_copy(model) if main_process else None
    for layer in model.base_model.model.bert.encoder.layer:
        fully_shard(layer)
    fully_shard(model)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.05)
    inputs = torch.randint(0, 64, (4, 8))

    def step() -> None:
        model.train()
        loss = torch.nn.functional.cross_entropy(model(input_ids=inputs).logits, torch.tensor([0, 1, 2, 0]))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    def logits() -> list[list[float]]:
        model.eval()
        with torch.no_grad():
            return model(input_ids=inputs).logits.tolist()

    step()
    best = logits()
    # Accelerator.get_state_dict under FSDP2: every process takes part, the main process gets it all.
    options = StateDictOptions(full_state_dict=True, broadcast_from_rank0=True, cpu_offload=True)
    weights = get_model_state_dict(model, options=options)
    best_file = out / "best.safetensors"
    if main_process:
        save_file({k: v.contiguous() for k, v in weights.items()}, str(best_file))
    dist.barrier()
    step()  # the weights move on past the best ones
    moved = logits()
    load_full_state_dict(model, load_file(str(best_file)) if main_process else {}, main_process)
    restored = logits()
    dcp.save(
        {"model": get_model_state_dict(model)},
        storage_writer=dcp.FileSystemWriter(out / "checkpoint" / "pytorch_model_fsdp_0"),
    )
    state = {"optimizer": get_optimizer_state_dict(model, optimizer)}
    dcp.save(state, storage_writer=dcp.FileSystemWriter(out / "checkpoint" / "optimizer_0"))
    if main_process:
        plain.load_state_dict(load_file(str(best_file)), assign=True)
        plain.eval()
        with torch.no_grad():
            unsharded = plain(input_ids=inputs).logits.tolist()
        meta = [name for name, p in plain.named_parameters() if p.is_meta]
        result = {"best": best, "moved": moved, "restored": restored, "plain": unsharded, "meta_left": meta}
        (out / "result.json").write_text(json.dumps(result))
    # Both processes leave together: once in a full test run (1 of about 10 here), the process that finished first
    # aborted at exit ("terminate called without an active exception") while the other still used the group.
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
