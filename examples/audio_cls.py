"""Chained transfer for audio with hf_transfer's Python API.

    accelerate launch examples/audio_cls.py                       # the embedded offline default
    accelerate launch examples/audio_cls.py train.epochs=2        # overrides apply to both runs
    accelerate launch examples/audio_cls.py --config my.yaml      # one run from your own config

No pretrained audio weights install from PyPI, so the default does the transfer itself, on audio
the project generates: run 1 trains a small wav2vec2 (`pypi:tiny-wav2vec2`, a config only) from
scratch on the source task `tones` (which of 6 notes); run 2 takes run 1's output_dir as its
`model:` and fine-tunes it on the target task `dyads` (which of 4 two-note chords), with a new head
for the new labels. The runs are written to <output_dir>/source and <output_dir>/target.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from hf_transfer import RunConfig, configure_logging, load_config, train
from hf_transfer.cli import add_run_arguments, summary

ROOT = Path(__file__).resolve().parent.parent
# Run 1: the source task from a random initialisation; run 2: the target task, whose `model` is set to
# run 1's output_dir below. Each is a task file (what to learn) with a recipe (how).
SOURCE = [ROOT / "tasks" / "tones_sample.yaml", ROOT / "configs" / "tiny_wav2vec2_scratch.yaml"]
TARGET = [ROOT / "tasks" / "dyads_sample.yaml", ROOT / "configs" / "audio_run_full.yaml"]
OUTPUT_DIR = "output_dir=runs/audio_cls"


def _run(config: RunConfig, name: str) -> Path:
    result = train(config)
    if result.is_main_process:
        print(f"{name}: {summary(result)}")
    return result.output_dir


def _in_subfolder(config: RunConfig, name: str) -> RunConfig:
    return dataclasses.replace(config, output_dir=str(Path(config.output_dir) / name))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_arguments(parser)  # without --config: the embedded two-run default
    args = parser.parse_args(argv)
    configure_logging()

    if args.config:
        _run(load_config(args.config, args.overrides), "run")
        return
    source = _in_subfolder(load_config(SOURCE, [OUTPUT_DIR, *args.overrides]), "source")
    source_dir = _run(source, "source (tones, from scratch)")
    # Chained transfer: the finished run is the model; its backbone is kept and a new head sized
    # to the target's labels replaces the old one.
    target = load_config(TARGET, [OUTPUT_DIR, *args.overrides, f"model={source_dir}"])
    _run(_in_subfolder(target, "target"), "target (dyads, from the source run)")


if __name__ == "__main__":
    main()
