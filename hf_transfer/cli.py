"""The `hf-transfer` command line (also `python -m hf_transfer`, so `accelerate launch -m hf_transfer` works)."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable

from .config import describe_fields, load_config
from .errors import HFTransferError

EPILOG_TRAIN = """\
Settings (override any of them as KEY=VALUE after the options; values are read as YAML):
{table}

Examples:
  hf-transfer train --config configs/lite0_linear_probe.yaml train.epochs=3 strategy=lora
  accelerate launch --multi_gpu --num_processes 2 -m hf_transfer train --config my.yaml
"""

AddArguments = Callable[[argparse.ArgumentParser], None]
Run = Callable[[argparse.Namespace], int]

# Sub-commands: name -> (help, add_arguments, run). Filled by add_command below.
COMMANDS: dict[str, tuple[str, AddArguments, Run]] = {}


def add_command(name: str, help: str, add_arguments: AddArguments, run: Run) -> None:
    COMMANDS[name] = (help, add_arguments, run)


def _settings_table() -> str:
    rows = describe_fields()
    width = max(len(key) for key, _, _ in rows)
    return "\n".join(f"  {key:<{width}}  {help} [default: {default}]" for key, default, help in rows)


def _train_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        "-c",
        action="append",
        help="YAML file with the run's settings (see below). Repeat to merge several, e.g. a task file "
        "from tasks/ then a recipe from configs/; later files win.",
    )
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="Dotted overrides, e.g. train.epochs=3.")


def _train(args: argparse.Namespace) -> int:
    import json

    from .train import train

    config = load_config(args.config, args.overrides)
    result = train(config)
    summary = {k: result.metrics[k] for k in ("accuracy", "f1_macro", "loss", "train_runtime") if k in result.metrics}
    print(f"Finished: {json.dumps(summary)} -> {result.output_dir}")
    return 0


def _show_config(args: argparse.Namespace) -> int:
    from .config import dump_config

    print(dump_config(load_config(args.config, args.overrides)), end="")
    return 0


add_command("train", "Fine-tune a model from a YAML config plus KEY=VALUE overrides.", _train_arguments, _train)
add_command("config", "Print the fully resolved config (YAML) without training.", _train_arguments, _show_config)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hf-transfer",
        description="Transfer learning for image, text and audio classification on one Accelerate engine "
        "(strategies: full, linear_probe, lora).",
        epilog="Run `hf-transfer COMMAND --help` for a command's options.",
    )
    parser.add_argument("--verbose", "-v", action="store_true", help="Log debug messages.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (help, add_arguments, _) in COMMANDS.items():
        epilog = EPILOG_TRAIN.format(table=_settings_table()) if name in ("train", "config") else None
        p = sub.add_parser(
            name, help=help, description=help, epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter
        )
        add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s %(levelname)s %(message)s"
    )
    try:
        return COMMANDS[args.command][2](args)
    except HFTransferError as err:
        print(f"hf-transfer: error: {err}", file=sys.stderr)
        return 2
