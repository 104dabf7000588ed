"""The command line starts at once: `--help` and `config` import no torch and friends; the registries
name their entries without importing them, and the lazy public API still gives the same objects."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from hf_transfer.core.errors import ConfigError
from hf_transfer.core.registry import Registry

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "transformers", "timm", "datasets", "peft", "accelerate", "torchvision", "huggingface_hub")


def _loaded_after(code: str) -> list[str]:
    """The heavy packages in sys.modules after running `code` in a fresh interpreter."""
    probe = f"{code}\nimport json, sys\nprint(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.splitlines()[-1])


@pytest.mark.parametrize(
    "argv",
    [["--help"], ["train", "--help"], ["config", "-c", "tasks/digits_sample.yaml", "strategy=lora"], ["compare", "-h"]],
    ids=["help", "train-help", "config", "compare-help"],
)
def test_help_and_config_import_no_heavy_package(argv):
    code = (
        "import contextlib, io\nfrom hf_transfer.cli import build_parser, main\nbuild_parser()\n"
        f"with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n    main({argv!r})"
    )
    assert _loaded_after(code) == []


@pytest.mark.parametrize("command", ["train", "compare", "rank"])
def test_a_config_error_is_reported_before_any_heavy_import(command):
    """A bad setting fails in the time `hf-transfer config` takes: the config is read and checked before
    torch, accelerate and the rest are imported."""
    code = (
        "import contextlib, io\nfrom hf_transfer.cli import main\nerr = io.StringIO()\n"
        f"with contextlib.redirect_stderr(err):\n    code = main([{command!r}, 'train.epochz=3'])\n"
        "assert code == 2, code\n"
        "assert \"Unknown config key 'train.epochz'\" in err.getvalue(), err.getvalue()"
    )
    assert _loaded_after(code) == []


def test_lazy_public_names_are_the_functions_even_after_their_modules_load():
    """`train` and `rank` are both functions and the modules defining them: importing the module first
    (as compare does) must not make `hf_transfer.train` the module."""
    code = (
        "import hf_transfer.compare, hf_transfer.rank\nimport hf_transfer\nfrom hf_transfer import rank, train\n"
        "assert train is hf_transfer.train and train.__module__ == 'hf_transfer.train', train\n"
        "assert rank.__module__ == 'hf_transfer.rank', rank\n"
        "assert all(getattr(hf_transfer, name) is not None for name in hf_transfer.__all__)"
    )
    assert "torch" in _loaded_after(code)  # the names resolve to the real objects, which need torch


def test_declared_adapters_are_exactly_the_adapter_classes():
    """The registry names the tasks from its declarations (no import); each resolves to the adapter
    class of that task, and every adapter class is declared."""
    from hf_transfer.adapters import ADAPTERS, audio, image, text  # noqa: F401 (every adapter module loaded)
    from hf_transfer.adapters.base import TaskAdapter

    def concrete(cls: type) -> list[type]:
        subclasses = [c for sub in cls.__subclasses__() for c in [sub, *concrete(sub)]]
        return [c for c in subclasses if c.__module__.startswith("hf_transfer.") and "task" in vars(c)]

    classes = {cls.task: cls for cls in concrete(TaskAdapter)}
    assert ADAPTERS.names() == sorted(classes)
    assert all(ADAPTERS.get(task) is cls for task, cls in classes.items())


def test_compare_runs_every_registered_strategy_by_default():
    from hf_transfer.methods.strategies import COMPARED_BY_DEFAULT, STRATEGIES

    assert sorted(COMPARED_BY_DEFAULT) == STRATEGIES.names()


def test_a_declared_entry_is_imported_on_first_get_only():
    registry: Registry[object] = Registry("thing")
    registry.declare("dumps", "json:dumps")
    registry.declare("missing", "hf_transfer.no_such_module:thing")
    assert registry.names() == ["dumps", "missing"] and "missing" in registry
    registry.check("missing")  # known by name: nothing is imported to say so
    assert registry.get("dumps") is json.dumps
    with pytest.raises(
        ConfigError, match=r"Unknown thing 'dump'\. Valid things: dumps, missing\. Did you mean 'dumps'"
    ):
        registry.check("dump")
    with pytest.raises(ValueError, match="already registered"):
        registry.register("dumps")(len)
    with pytest.raises(ModuleNotFoundError):
        registry.get("missing")


def test_top_level_help_names_every_registered_strategy():
    from hf_transfer.cli import build_parser
    from hf_transfer.methods.strategies import STRATEGIES

    description = " ".join(build_parser().format_help().split())
    for name in STRATEGIES.names():
        assert name in description, f"`hf-transfer --help` does not name the strategy {name!r}"
