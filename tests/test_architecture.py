"""The package's shape, checked from its source: import layers, no cycles, no branching on model families.

The layers below are the table in docs/architecture.md (a test keeps the two equal). A module may
import, at module level, modules of its own layer or a lower one. Imports inside a function (lazy:
for start-up time, or to break a cycle) and `if TYPE_CHECKING:` imports (annotations only) do not
count, except that a lazy import of a higher layer must be listed in LAZY_UPWARD.

`python tests/test_architecture.py` prints the package's import graph, module-level and lazy apart.
"""

from __future__ import annotations

import ast
import functools
import re
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "hf_transfer"
DOC = ROOT / "docs" / "architecture.md"

# Module names are dotted, relative to hf_transfer; "hf_transfer" is the package's __init__.py.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    (
        "foundations",
        (
            "errors",
            "log",
            "registry",
            "fields",
            "rng",
            "cache",
            "plots",
            "layer_decay",
            "weights",
            "checkpoints",
            "metrics",
            "logme",
            "lazy",
            "yaml_reader",
        ),
    ),
    ("run folder and specs", ("rundir", "specs")),
    ("adapter contract", ("adapters.usage", "adapters.base")),
    (
        "adapters",
        ("adapters.image", "adapters.image_timm", "adapters.image_hf", "adapters.text", "adapters.audio", "adapters"),
    ),
    ("strategies", ("strategies",)),
    ("config", ("config",)),
    ("data", ("data", "datapipe", "streaming", "evaluation")),
    ("engine", ("engine", "autobatch", "distributed")),
    ("around a run", ("probe_search", "features", "artifacts", "card", "hub", "defaults", "inference")),
    ("train", ("train",)),
    ("built on train", ("compare", "rank")),
    ("entry points", ("cli", "hf_transfer", "__main__", "samples")),
]

# Lazy imports of a higher layer, each with its reason (docs/architecture.md, "Lazy imports").
LAZY_UPWARD = {
    ("rundir", "config"),  # RunDir.read_config; config imports the adapters, which use RunDir
    ("specs", "samples"),  # sample data sets register themselves when a `sample:` source is first asked for
}

# Only the adapters know their concrete classes; everything else goes through ADAPTERS or the contract.
ADAPTER_ENTRY_POINTS = {"adapters", "adapters.base", "adapters.usage"}

FAMILY = re.compile(
    r"(?<![a-z])(vit|deit|beit|swin|convnext|resnet|efficientnet|mobilenet|regnet|bert|roberta|deberta|distilbert|"
    r"minilm|electra|albert|wav2vec2?|hubert|wavlm|whisper|clip|dino|timm|transformers)",
    re.IGNORECASE,
)
# Where a spec string is parsed to choose an image backend ("timm/..." is timm's Hub organisation): the
# one place where a name decides the family, by design (adapters/image.py `backend_for`).
FAMILY_PARSERS = {("adapters/image_timm.py", "timm_name")}


def layer_of() -> dict[str, int]:
    return {module: index for index, (_, modules) in enumerate(LAYERS) for module in modules}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts) or "hf_transfer"


@functools.cache
def package_modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _resolve(importer: str, is_package: bool, node: ast.Import | ast.ImportFrom, known: set[str]) -> list[str]:
    """The package modules an import statement names (relative to hf_transfer)."""

    def relative(dotted: str) -> str | None:
        if dotted == "hf_transfer":
            return "hf_transfer"
        return dotted.removeprefix("hf_transfer.") if dotted.startswith("hf_transfer.") else None

    if isinstance(node, ast.Import):
        return [name for alias in node.names if (name := relative(alias.name)) is not None]
    if node.level == 0:
        base = relative(node.module or "")
        if base is None:
            return []
    else:
        parts = [] if importer == "hf_transfer" else importer.split(".")
        if not is_package:
            parts = parts[:-1]
        parts = parts[: len(parts) - (node.level - 1)] + ([node.module] if node.module else [])
        base = ".".join(parts) or "hf_transfer"
    prefix = "" if base == "hf_transfer" else base + "."
    return [prefix + alias.name if prefix + alias.name in known else base for alias in node.names]


def _is_type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


@functools.cache
def imports() -> list[tuple[str, str, int, bool]]:
    """Every intra-package import as (importer, imported, line, lazy); TYPE_CHECKING imports left out.
    `importlib.import_module("hf_transfer.x")` counts as an import of x."""
    modules = package_modules()
    found = []
    for importer, path in modules.items():

        def visit(nodes: Iterable[ast.AST], lazy: bool, importer: str = importer, path: Path = path) -> None:
            for node in nodes:
                if _is_type_checking(node):
                    visit(node.orelse, lazy)  # the else branch runs
                    continue
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    for target in _resolve(importer, path.name == "__init__.py", node, set(modules)):
                        found.append((importer, target, node.lineno, lazy))
                elif (
                    isinstance(node, ast.Call)
                    and ast.unparse(node.func).endswith("import_module")
                    and node.args
                    and isinstance(node.args[0], ast.Constant)
                    and str(node.args[0].value).startswith("hf_transfer.")
                ):
                    found.append((importer, node.args[0].value.removeprefix("hf_transfer."), node.lineno, lazy))
                inside = lazy or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
                visit(ast.iter_child_nodes(node), inside)

        visit(ast.parse(path.read_text()).body, False)
    return found


def _where(importer: str, line: int) -> str:
    return f"{package_modules()[importer].relative_to(ROOT)}:{line}"


def _describe(module: str) -> str:
    index = layer_of()[module]
    return f"{module} (layer {index + 1}, {LAYERS[index][0]})"


def test_every_module_has_one_layer():
    listed = [module for _, modules in LAYERS for module in modules]
    assert len(listed) == len(set(listed)), "a module is listed in two layers"
    unplaced, gone = sorted(set(package_modules()) - set(listed)), sorted(set(listed) - set(package_modules()))
    assert not unplaced, f"place these modules in a layer, here and in docs/architecture.md: {unplaced}"
    assert not gone, f"LAYERS lists modules that are gone: {gone}"


def test_module_level_imports_never_reach_a_higher_layer():
    layer = layer_of()
    wrong = [
        f"{_where(importer, line)}: {_describe(importer)} imports {_describe(target)}"
        for importer, target, line, lazy in imports()
        if not lazy and layer[target] > layer[importer]
    ]
    assert not wrong, "imports against the layering (docs/architecture.md):\n" + "\n".join(wrong)


def test_lazy_imports_of_a_higher_layer_are_the_listed_ones():
    layer = layer_of()
    upward = {
        (importer, target): line
        for importer, target, line, lazy in imports()
        if lazy and layer[target] > layer[importer]
    }
    unlisted = [
        f"{_where(importer, line)}: {_describe(importer)} imports {_describe(target)}"
        for (importer, target), line in upward.items()
        if (importer, target) not in LAZY_UPWARD
    ]
    assert not unlisted, "lazy imports of a higher layer not in LAZY_UPWARD:\n" + "\n".join(unlisted)
    assert LAZY_UPWARD <= set(upward), f"LAZY_UPWARD lists imports that are gone: {LAZY_UPWARD - set(upward)}"


def test_no_import_cycle_at_module_level():
    graph: dict[str, set[str]] = {}
    for importer, target, _, lazy in imports():
        if not lazy and target != importer:
            graph.setdefault(importer, set()).add(target)
    done: set[str] = set()

    def cycle_from(module: str, path: list[str]) -> list[str] | None:
        if module in path:
            return path[path.index(module) :] + [module]
        if module in done:
            return None
        for target in sorted(graph.get(module, ())):
            if found := cycle_from(target, path + [module]):
                return found
        done.add(module)
        return None

    for module in sorted(graph):
        cycle = cycle_from(module, [])
        assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_concrete_adapters_are_reached_only_through_the_registry():
    wrong = [
        f"{_where(importer, line)}: {importer} imports {target}; use ADAPTERS or the contract (adapters.base)"
        for importer, target, line, _ in imports()
        if target.startswith("adapters") and not importer.startswith("adapters") and target not in ADAPTER_ENTRY_POINTS
    ]
    assert not wrong, "\n".join(wrong)


def test_docs_architecture_lists_the_same_layers():
    rows = [line for line in DOC.read_text().splitlines() if re.match(r"\|\s*\d+\s*\|", line)]
    documented = [
        (cells[2].strip(), tuple(re.findall(r"`([\w.]+)`", cells[3]))) for cells in (r.split("|") for r in rows)
    ]
    assert documented == LAYERS, "docs/architecture.md's layer table and LAYERS differ"


def family_branches(source: str, path: str) -> list[str]:
    """Comparisons and string tests (==, in, startswith, re.match, match/case) against a model-family name."""
    tree = ast.parse(source)
    enclosing: dict[ast.AST, str] = {}
    for function in ast.walk(tree):
        if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for node in ast.walk(function):
                if node is not function:
                    enclosing.setdefault(node, function.name)  # ast.walk goes outside in: the outermost def
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            tests = ("startswith", "endswith", "find", "index", "match", "search", "fullmatch")
            operands = node.args if node.func.attr in tests else []
        elif isinstance(node, ast.match_case):
            operands = [node.pattern]
        else:
            continue
        strings = [
            c.value for o in operands for c in ast.walk(o) if isinstance(c, ast.Constant) and isinstance(c.value, str)
        ]
        if any(FAMILY.search(s) for s in strings) and (path, enclosing.get(node, "")) not in FAMILY_PARSERS:
            found.append(f"{path}:{node.lineno}: {ast.unparse(node)}")
    return found


def test_family_check_finds_string_branching():
    source = (
        "def f(name, model):\n"
        "    if 'vit' in name: pass\n"
        "    if name.startswith(('efficientnet', 'x')): pass\n"
        "    if model.config.model_type == 'bert': pass\n"
        "    if self.family == 'timm': pass\n"
        "    if name in ('activation', 'gravity'): pass\n"
    )
    assert [line.split(":")[1] for line in family_branches(source, "x.py")] == ["2", "3", "4", "5"]


def test_no_branching_on_model_family_names():
    found = [
        hit
        for path in sorted(PACKAGE.rglob("*.py"))
        for hit in family_branches(path.read_text(), path.relative_to(PACKAGE).as_posix())
    ]
    assert not found, "branching on a model family's name; use the model's structure or the adapter:\n" + "\n".join(
        found
    )


def print_graph() -> None:
    edges = imports()
    for module in sorted(package_modules(), key=lambda m: (layer_of()[m], m)):
        top = sorted({t for i, t, _, lazy in edges if i == module and not lazy})
        lazy = sorted({t for i, t, _, z in edges if i == module and z} - set(top))
        print(f"{_describe(module)}\n    module level: {', '.join(top) or '-'}\n    lazy: {', '.join(lazy) or '-'}")


if __name__ == "__main__":
    print_graph()
