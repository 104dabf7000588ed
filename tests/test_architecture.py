"""The package's shape, checked from its source: the directory tree is the layer table, imports go down
only, no cycles, no branching on model families.

A module's layer is its folder (`hf_transfer/core/rundir.py` is in layer `core`); a module directly in
`hf_transfer/` is in the top layer, `workflows`. The layers below are the table in docs/architecture.md
(a test keeps the two equal). A module may import modules of its own layer or a lower one, never a
higher one, and no import cycle exists, counting every kind of import: module-level, inside a function
(lazy), under `if TYPE_CHECKING:`, and a module named by string (`importlib.import_module`, a registry's
`declare("hf_transfer.x:Name")`, a package's lazy `_EXPORTS`).

`python tests/test_architecture.py` prints the package's import graph, by layer, each kind apart.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import re
from collections.abc import Callable, Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "hf_transfer"
DOC = ROOT / "docs" / "architecture.md"

# The layers, lowest first: each is a sub-package of hf_transfer, except the last, the flat modules.
LAYERS = ["core", "config", "catalog", "adapters", "data", "engine", "methods", "artifacts", "workflows"]
TOP = "workflows"
MAX_FLAT = 12  # modules directly in hf_transfer/, __init__ and __main__ included

# Only the adapters know their concrete classes; everything else goes through ADAPTERS or the contract
# (base, usage, and layers: which layer a parameter is in, for layer-wise learning rates).
ADAPTER_ENTRY_POINTS = {"adapters", "adapters.base", "adapters.usage", "adapters.layers"}

FAMILY = re.compile(
    r"(?<![a-z])(vit|deit|beit|swin|convnext|resnet|efficientnet|mobilenet|regnet|bert|roberta|deberta|distilbert|"
    r"minilm|electra|albert|wav2vec2?|hubert|wavlm|whisper|clip|dino|timm|transformers)",
    re.IGNORECASE,
)
# Where a spec string is parsed to choose an image backend ("timm/..." is timm's Hub organisation): the
# one place where a name decides the family, by design (adapters/image_timm.py `timm_name`).
FAMILY_PARSERS = {("adapters/image_timm.py", "timm_name")}


def module_name(path: Path) -> str:
    """Dotted, relative to hf_transfer; "hf_transfer" is the package's __init__.py."""
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts) or "hf_transfer"


@functools.cache
def package_modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def layer(module: str) -> str:
    """A module's layer is its folder: the first part of its dotted name, or `workflows` when flat."""
    path = package_modules()[module]
    return path.relative_to(PACKAGE).parts[0] if len(path.relative_to(PACKAGE).parts) > 1 else TOP


def rank(module: str) -> int:
    return LAYERS.index(layer(module))


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


def _named_by_string(importer: str, node: ast.AST, known: set[str]) -> list[str]:
    """Modules named in a string: "hf_transfer.x" or "hf_transfer.x:Name" (import_module, Registry.declare),
    and the values of a package's `_EXPORTS = {"Name": "submodule"}` (core.lazy.lazy_getattr)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith("hf_transfer."):
        target = node.value.removeprefix("hf_transfer.").partition(":")[0]
        return [target] if target in known else []
    is_exports = isinstance(node, (ast.Assign, ast.AnnAssign)) and "_EXPORTS" in ast.unparse(node).partition("=")[0]
    if is_exports and isinstance(node.value, ast.Dict):
        prefix = "" if importer == "hf_transfer" else importer + "."
        return [
            prefix + v.value for v in node.value.values if isinstance(v, ast.Constant) and prefix + v.value in known
        ]
    return []


@functools.cache
def imports() -> list[tuple[str, str, int, str]]:
    """Every intra-package import as (importer, imported, line, kind); kind is "module" (module level),
    "lazy" (inside a function, or named by string) or "type" (under `if TYPE_CHECKING:`)."""
    modules = package_modules()
    known = set(modules)
    found = []
    for importer, path in modules.items():

        def visit(nodes: Iterable[ast.AST], kind: str, importer: str = importer, path: Path = path) -> None:
            for node in nodes:
                if _is_type_checking(node):
                    visit(node.body, "type")
                    visit(node.orelse, kind)
                    continue
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    for target in _resolve(importer, path.name == "__init__.py", node, known):
                        found.append((importer, target, node.lineno, kind))
                for target in _named_by_string(importer, node, known):
                    found.append((importer, target, node.lineno, "lazy" if kind == "module" else kind))
                inside = "lazy" if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)) else kind
                visit(ast.iter_child_nodes(node), inside if kind == "module" else kind)

        visit(ast.parse(path.read_text()).body, "module")
    return [(i, t, line, kind) for i, t, line, kind in found if i != t]


def _where(importer: str, line: int) -> str:
    return f"{package_modules()[importer].relative_to(ROOT)}:{line}"


def _describe(module: str) -> str:
    return f"{module} (layer {rank(module) + 1}, {layer(module)})"


def import_cycle(edges: Iterable[tuple[str, str]]) -> list[str] | None:
    """One cycle of the directed graph `edges`, as the modules along it (first == last), or None."""
    graph: dict[str, set[str]] = {}
    for importer, target in edges:
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
        if cycle := cycle_from(module, []):
            return cycle
    return None


def test_every_folder_is_a_layer_and_few_modules_are_flat():
    folders = sorted({path.relative_to(PACKAGE).parts[0] for path in package_modules().values()} - {"__init__.py"})
    folders = [f for f in folders if not f.endswith(".py")]
    assert sorted(folders) == sorted(LAYERS[:-1]), f"sub-packages {folders} are not the layers {LAYERS[:-1]}"
    assert all((PACKAGE / folder / "__init__.py").is_file() for folder in folders)
    flat = sorted(path.name for path in PACKAGE.glob("*.py"))
    assert len(flat) <= MAX_FLAT, f"{len(flat)} modules flat in hf_transfer/ (at most {MAX_FLAT}): {flat}"
    nested = [p for p in package_modules().values() if len(p.relative_to(PACKAGE).parts) > 2]
    assert not nested, f"a layer is one folder deep: {nested}"


def test_no_import_of_a_higher_layer_of_any_kind():
    wrong = [
        f"{_where(importer, line)}: {_describe(importer)} imports {_describe(target)} ({kind})"
        for importer, target, line, kind in imports()
        if rank(target) > rank(importer)
    ]
    assert not wrong, "imports against the layering (docs/architecture.md):\n" + "\n".join(wrong)


def test_no_import_cycle_of_any_kind():
    cycle = import_cycle((importer, target) for importer, target, _, _ in imports())
    assert cycle is None, "import cycle (module-level, lazy or TYPE_CHECKING): " + " -> ".join(cycle)


def test_the_checks_see_every_kind_of_import():
    """The graph holds lazy, TYPE_CHECKING and by-string imports (so the two tests above see them)."""
    edges = {(importer, target, kind) for importer, target, _, kind in imports()}
    assert ("hf_transfer", "train", "type") in edges  # the public API's TYPE_CHECKING block
    assert ("hf_transfer", "train", "lazy") in edges  # ... and its _EXPORTS, imported on first use
    assert ("adapters", "adapters.image", "lazy") in edges  # declared in ADAPTERS by string
    assert ("cli", "train", "lazy") in edges  # each sub-command's module imported when it runs
    assert import_cycle([("a", "b"), ("b", "c"), ("c", "a")]) == ["a", "b", "c", "a"]
    assert import_cycle([("a", "b"), ("b", "c")]) is None


def test_concrete_adapters_are_reached_only_through_the_registry():
    wrong = [
        f"{_where(importer, line)}: {importer} imports {target}; use ADAPTERS or the contract (adapters.base)"
        for importer, target, line, _ in imports()
        if target.startswith("adapters") and not importer.startswith("adapters") and target not in ADAPTER_ENTRY_POINTS
    ]
    assert not wrong, "\n".join(wrong)


def _tree_lines(text: str) -> list[str]:
    """docs/architecture.md's tree: the code block after "## The tree", less its first line (the package)."""
    return text.split("## The tree", 1)[1].split("```", 2)[1].splitlines()[2:]


def _tree_entry(line: str) -> tuple[int, str] | None:
    """(depth, name) of a tree line that names a file or folder (each level indented two spaces under its
    folder), else None: a description's next line, say."""
    depth = (len(line) - len(line.lstrip())) // 2
    name = line.split()[0] if line.strip() else ""
    return (depth, name) if 0 < depth <= 2 and re.fullmatch(r"[\w.]+(/[\w.]+)*/?", name) else None


def documented_tree(text: str) -> set[str]:
    """The file paths (relative to hf_transfer/) in docs/architecture.md's tree."""
    folders: list[str] = []
    paths = set()
    for depth, name in filter(None, map(_tree_entry, _tree_lines(text))):
        if name.endswith("/"):
            folders[depth - 1 :] = [name]
        else:
            paths.add("".join(folders[: depth - 1]) + name)
    return paths


def wrapped_tree_lines(text: str) -> list[str]:
    """The tree's lines that name nothing: one entry's description carried onto a second line."""
    return [line.strip() for line in _tree_lines(text) if line.strip() and _tree_entry(line) is None]


def test_the_tree_check_finds_a_wrapped_entry():
    text = "## The tree\n```\npkg/\n  a.py    one line\n  core/\n    b.py  starts here\n          and wraps\n```\n"
    assert documented_tree(text) == {"a.py", "core/b.py"}
    assert wrapped_tree_lines(text) == ["and wraps"]


def test_docs_architecture_lists_the_same_layers_and_every_module():
    text = DOC.read_text()
    rows = [line for line in text.splitlines() if re.match(r"\|\s*\d+\s*\|", line)]
    documented = [cells[2].strip().strip("`").rstrip("/") for cells in (r.split("|") for r in rows)]
    assert documented == LAYERS, "docs/architecture.md's layer table and LAYERS differ"
    modules = {path.relative_to(PACKAGE).as_posix() for path in package_modules().values()}
    listed = {path for path in documented_tree(text) if path.endswith(".py")}
    assert not modules - listed, f"docs/architecture.md's tree does not list: {sorted(modules - listed)}"
    assert not listed - modules, f"docs/architecture.md's tree lists modules that are gone: {sorted(listed - modules)}"
    wrapped = wrapped_tree_lines(text)
    assert not wrapped, f"docs/architecture.md's tree has one line per module; these lines wrap an entry: {wrapped}"


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


# No function longer than this many lines (from `def` to its last line, docstring included) or with more
# parameters (self / cls not counted; *args and **kwargs one each): group what travels together into a
# small dataclass, split a function by job.
MAX_FUNCTION_LINES = 60
MAX_PARAMETERS = 6
LONG_FUNCTIONS_ALLOWED = {
    # Public API (hf_transfer.__all__, README): evaluate_run(run, data, label_column, input_column, name,
    # batch_size, subset) keeps its positional parameters, so that no user's call breaks.
    ("inference.py", "evaluate_run"),
}


def parameter_count(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    args = node.args
    named = [*args.posonlyargs, *args.args, *args.kwonlyargs]
    bound = 1 if named and named[0].arg in ("self", "cls") else 0
    return len(named) - bound + (args.vararg is not None) + (args.kwarg is not None)


def long_functions(source: str, path: str) -> dict[tuple[str, str], str]:
    """(path, qualified name) -> what is too much, for every function of `source` over the limits."""
    found = {}

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = prefix + child.name
                if not isinstance(child, ast.ClassDef):
                    lines, count = child.end_lineno - child.lineno + 1, parameter_count(child)
                    if lines > MAX_FUNCTION_LINES or count > MAX_PARAMETERS:
                        found[path, name] = f"{path}:{child.lineno} {name}: {lines} lines, {count} parameters"
                visit(child, name + ".")
            else:
                visit(child, prefix)

    visit(ast.parse(source), "")
    return found


def test_the_function_size_check_counts_lines_and_parameters():
    body = "".join(f"    x{i} = {i}\n" for i in range(59))
    source = (
        f"def fits(a, b, c, d, e, f):\n{body}"  # 60 lines, 6 parameters
        f"def too_long(a):\n{body}    return x0\n"  # 61 lines
        "class C:\n"
        "    def method(self, a, b, c, d, e, *args): pass\n"  # self not counted: 6
        "    def too_many(self, a, b, c, d, e, *args, **kwargs):\n"  # 7
        "        def inner(a, b, c, d, e, f, *, g): pass\n"  # keyword-only counted: 7
    )
    assert sorted(long_functions(source, "x.py")) == [
        ("x.py", "C.too_many"),
        ("x.py", "C.too_many.inner"),
        ("x.py", "too_long"),
    ]


def test_no_function_over_60_lines_or_6_parameters():
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        found.update(long_functions(path.read_text(), path.relative_to(PACKAGE).as_posix()))
    offenders = [what for key, what in sorted(found.items()) if key not in LONG_FUNCTIONS_ALLOWED]
    allowed = [what for key, what in sorted(found.items()) if key in LONG_FUNCTIONS_ALLOWED]
    print("Over the limits, allowed for now:", *allowed, sep="\n    ")
    print("Over the limits:", *offenders or ["none"], sep="\n    ")
    assert not offenders, (
        f"functions over {MAX_FUNCTION_LINES} lines or {MAX_PARAMETERS} parameters: group the parameters that "
        "travel together into a small dataclass, split the function by job:\n" + "\n".join(offenders)
    )
    fixed = sorted(f"{path} {name}" for path, name in LONG_FUNCTIONS_ALLOWED - set(found))
    assert not fixed, "within the limits now: remove from LONG_FUNCTIONS_ALLOWED:\n" + "\n".join(fixed)


# Accelerate's private state resets: it has no public way to forget an Accelerator's settings (checked in
# accelerate 1.16.0), so one function wraps the call and says why; nothing else reaches into its privates.
PRIVATE_ACCELERATE = re.compile(r"\b(?:AcceleratorState|PartialState|GradientState)\._\w+")


def test_accelerates_private_api_is_called_in_one_place():
    found = [
        f"{path.relative_to(PACKAGE)}:{number}"
        for path in sorted(PACKAGE.rglob("*.py"))
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if PRIVATE_ACCELERATE.search(line.split("#")[0]) and not line.lstrip().startswith(("`", '"'))
    ]
    assert [where.split(":")[0] for where in found] == ["engine/distributed.py"], (
        "call Accelerate's private API only through engine/distributed.py's release_accelerator_state:\n"
        + "\n".join(found)
    )


# "Following config from train()" (issue 19), measured on a tiny one-stage run (full fine-tuning, one epoch):
# sys.setprofile records every call into the package that receives the run's settings, as the sequence of
# modules entered, consecutive calls in one module counted once. Modules: how many differ; returns: how many
# entries of the sequence go back to a module it already left.
# "The run's settings" is any argument that is the config or carries a part of it: an instance of RunConfig or
# of one of its sections (`config_parts`: TrainConfig, DataConfig, the strategies' settings ...), or of a class
# of the package that holds one of those, or a holder of one, in a field or in an attribute its `__init__` keeps
# (`config_carriers`, read from the source: RunPlan, FitPlan, Stage, Prepared, the Engine and its TrainConfig,
# the adapter's parts, which keep the config ...); a list, tuple or dict of them carries them too. Not counted:
# `self` (a method of an object the config reached works in that object's module), and calls made by the
# config's own methods (its validation when `dataclasses.replace` builds the next one).
# Goal of the issue: <= 10 modules, <= 12 returns; met: 9 modules, 10 returns (docs/refactor-notes.md,
# "Following config": 11 and 20 on 0981269, 13 and 28 on 39deb84, measured the same way).
FOLLOW_CONFIG_GOAL = (10, 12)
_NOT_HELD = {"Callable", "type", "ClassVar", "Iterator", "Iterable", "Generator"}  # names a kind, holds no value


def _held_names(annotation: ast.expr | None) -> set[str]:
    """The class names an annotation says a value holds: `TrainConfig | None` -> {TrainConfig}; `tuple[Stage, ...]`
    -> {Stage}; nothing inside `Callable[...]` or `type[...]` (a function's or a class's, not a value)."""
    if annotation is None:
        return set()
    if isinstance(annotation, ast.Constant) and isinstance(annotation.value, str):
        return _held_names(ast.parse(annotation.value, mode="eval").body)
    if isinstance(annotation, ast.Subscript):
        head = annotation.value.id if isinstance(annotation.value, ast.Name) else getattr(annotation.value, "attr", "")
        return set() if head in _NOT_HELD else _held_names(annotation.value) | _held_names(annotation.slice)
    if isinstance(annotation, ast.Name):
        return {annotation.id}
    if isinstance(annotation, ast.Attribute):
        return {annotation.attr}
    return set().union(*(_held_names(child) for child in ast.iter_child_nodes(annotation)))


def _class_holdings() -> dict[tuple[str, str], tuple[set[str], set[str]]]:
    """(module, class) -> (its bases' names, the class names it holds: annotated fields, and `__init__`
    parameters it keeps on `self`), for every class of the package, read from its source."""
    found = {}
    for module, path in package_modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ClassDef):
                continue
            held = {name for f in node.body if isinstance(f, ast.AnnAssign) for name in _held_names(f.annotation)}
            for init in (f for f in node.body if isinstance(f, ast.FunctionDef) and f.name == "__init__"):
                annotations = {a.arg: a.annotation for a in [*init.args.args, *init.args.kwonlyargs]}
                kept = {
                    value.id
                    for assign in ast.walk(init)
                    if isinstance(assign, ast.Assign)
                    and any(isinstance(t, ast.Attribute) and ast.unparse(t.value) == "self" for t in assign.targets)
                    for value in [assign.value]
                    if isinstance(value, ast.Name)
                }
                held |= {name for arg in kept & set(annotations) for name in _held_names(annotations[arg])}
            found[module, node.name] = ({ast.unparse(b).rpartition(".")[2] for b in node.bases}, held)
    return found


def config_parts() -> set[type]:
    """RunConfig and its sections, theirs included: the dataclasses a default RunConfig() is made of."""
    from hf_transfer import RunConfig

    found: set[type] = set()
    todo: list[object] = [RunConfig()]
    while todo:
        value = todo.pop()
        if dataclasses.is_dataclass(value) and type(value) not in found:
            found.add(type(value))
            todo += [getattr(value, field.name) for field in dataclasses.fields(value)]
    return found


def config_carriers(parts: Iterable[str]) -> set[tuple[str, str]]:
    """(module, class) of the package's classes that hold a value of a class named in `parts`, or a holder of
    one, or derive from one (see above), read from the source and found to a fixed point."""
    classes = _class_holdings()
    found: set[tuple[str, str]] = set()
    while True:
        names = set(parts) | {name for _, name in found}
        more = {key for key, (bases, held) in classes.items() if (held | bases) & names} - found
        if not more:
            return found
        found |= more


def config_path(run: Callable[[], object], calls: list[str] | None = None) -> list[str]:
    """The modules (relative to hf_transfer/) that the config enters while `run()` runs, as described above;
    `calls` (when given) gets each recorded call as `module:function(the arguments that carry it)`."""
    import sys

    parts = config_parts()
    carriers = {
        (f"hf_transfer.{module}" if module != "hf_transfer" else module, name)
        for module, name in config_carriers(kind.__name__ for kind in parts)
    }
    prefix, path = f"{PACKAGE}/", []

    def carries(value: object, depth: int = 0) -> bool:
        kinds = type(value).__mro__
        if any(kind in parts or (kind.__module__, kind.__qualname__) in carriers for kind in kinds):
            return True
        if depth == 0 and isinstance(value, (list, tuple, dict)):
            items = list(value.values() if isinstance(value, dict) else value)[:16]
            return any(carries(item, 1) for item in items)
        return False

    def own(caller) -> bool:  # noqa: ANN001
        """Whether `caller` is a method of the config or a section (its validation, when `replace` builds one)."""
        names = caller.f_code.co_varnames[:1] if caller is not None else ()
        return "self" in names and type(caller.f_locals.get("self")) in parts

    def profile(frame, event, arg) -> None:  # noqa: ANN001
        code = frame.f_code
        if event != "call" or not code.co_filename.startswith(prefix):
            return
        count = code.co_argcount + code.co_kwonlyargcount + bool(code.co_flags & 4) + bool(code.co_flags & 8)
        carried = [n for n in code.co_varnames[:count] if n != "self" and carries(frame.f_locals.get(n))]
        if carried and not own(frame.f_back):
            module = code.co_filename[len(prefix) :]
            if calls is not None:
                calls.append(f"{module}:{code.co_qualname}({', '.join(carried)})")
            if not path or path[-1] != module:
                path.append(module)

    sys.setprofile(profile)
    try:
        run()
    finally:
        sys.setprofile(None)
    return path


def test_the_config_classes_are_the_config_its_sections_and_what_carries_them():
    parts = {kind.__name__ for kind in config_parts()}
    assert parts == {
        "RunConfig", "DataConfig", "TrainConfig", "ExportConfig", "HubConfig", "LinearProbeConfig", "LoraConfigSpec",
        "LpFtSettings",
    }  # fmt: skip
    carriers = {name for _, name in config_carriers(parts)}
    assert {"RunPlan", "FitPlan", "Stage", "Prepared", "StageFit", "Engine", "ModelIO", "InputCodec"} <= carriers
    assert not {"Strategy", "FitData", "RunDir", "Registry", "CardFacts"} & carriers  # they hold no setting of the run


def test_following_config_from_train_visits_few_modules_and_returns_rarely(color_data, tmp_path):
    from conftest import tiny_image_overrides

    from hf_transfer import load_config, train

    config = load_config(None, tiny_image_overrides(*color_data, tmp_path / "out", **{"train.epochs": 1}))
    path = config_path(lambda: train(config))
    returns = sum(module in path[:i] for i, module in enumerate(path))
    goal = f"goal <= {FOLLOW_CONFIG_GOAL[0]} modules, <= {FOLLOW_CONFIG_GOAL[1]} returns"
    print(f"{len(set(path))} modules, {returns} returns ({goal}):", " -> ".join(path))
    assert path[0] == "train.py" and "engine/loop.py" in path  # the measurement sees the run, the engine included
    assert len(set(path)) <= FOLLOW_CONFIG_GOAL[0] and returns <= FOLLOW_CONFIG_GOAL[1], " -> ".join(path)


def print_graph() -> None:
    edges = imports()
    for module in sorted(package_modules(), key=lambda m: (rank(m), m)):
        print(_describe(module))
        for kind in ("module", "lazy", "type"):
            targets = sorted({t for i, t, _, k in edges if i == module and k == kind})
            print(f"    {kind}: {', '.join(targets) or '-'}")


if __name__ == "__main__":
    print_graph()


# Where the package reads a private part of a dependency (an attribute or import named `_x` that the package
# does not define itself), and why. Issue 19: none where a public API exists; those that remain in one place.
PRIVATE_APIS_ALLOWED = {
    # datasets: split conventions over our own folder listing, a split's row numbers, the fingerprint
    ("data/internals.py", "_get_data_files_patterns"),
    ("data/internals.py", "_indices"),
    ("data/internals.py", "_fingerprint"),
    # transformers: wav2vec2's mask of its feature frames (no public equivalent)
    ("adapters/audio.py", "_get_feature_vector_attention_mask"),
    # accelerate: a fresh AcceleratorState for the next Accelerator of the process
    ("engine/distributed.py", "_reset_state"),
}


def private_uses(source: str, defined: set[str]) -> set[str]:
    """The `_x` names (not dunders) that `source` reads as attributes or imports from another package and
    that are not in `defined` (the package's own names)."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        names = []
        if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load):
            names = [node.attr]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and not (node.module or "").startswith("hf_transfer"):
            names = [alias.name for alias in node.names]
        found.update(n for n in names if n.startswith("_") and not n.startswith("__") and n not in defined)
    return found


def _own_names(sources: list[str]) -> set[str]:
    defined = set()
    for source in sources:
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                defined.add(node.name)
            elif isinstance(node, ast.Name | ast.Attribute) and isinstance(node.ctx, ast.Store):
                defined.add(node.id if isinstance(node, ast.Name) else node.attr)
            elif isinstance(node, ast.arg):
                defined.add(node.arg)
    return defined


def test_private_apis_of_dependencies_only_where_wrapped():
    paths = sorted(PACKAGE.rglob("*.py"))
    defined = _own_names([path.read_text() for path in paths])
    found = {
        (path.relative_to(PACKAGE).as_posix(), name)
        for path in paths
        for name in private_uses(path.read_text(), defined)
    }
    assert not found - PRIVATE_APIS_ALLOWED, (
        "a private part of a dependency read outside its wrapper: use a public API, or wrap it in one place "
        f"(data/internals.py for datasets) with why: {sorted(found - PRIVATE_APIS_ALLOWED)}"
    )


def test_the_private_api_check_finds_an_unwrapped_use():
    source = "import x\nfrom datasets.data_files import _hidden\nx.dataset._indices\nself._mine = 1\nself._mine\n"
    assert private_uses(source, {"_mine"}) == {"_hidden", "_indices"}


# Issue 19: RunDir (core/rundir.py) owns the run folder's names: its checkpoints' names and numbering, what is
# inside one, the `.tmp` + rename of a checkpoint, the model's staging folder; core/atomic.py names a file's
# temporary. No other module spells one in a string (an f-string's literal parts included; docstrings and
# comments may describe them).
RUN_FOLDER_NAMES = re.compile(
    r"step_(?:$|[{\d*])|checkpoint-|\.tmp|\.model-|trainer_state\.json|best\.safetensors|loader_state_|stream_state_"
)
# Folders outside a run, renamed into place by their owners the same way (not a run folder's names).
RUN_FOLDER_NAMES_ALLOWED = {"catalog/specs.py": "the pypi weights cache's own download folders"}


def run_folder_names(source: str, where: str) -> list[str]:
    tree = ast.parse(source)
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return sorted(
        f"{where}:{node.lineno}: {node.value!r}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and id(node) not in docstrings
        and RUN_FOLDER_NAMES.search(node.value)
    )


def test_the_run_folder_name_check_finds_names_in_strings_not_in_docstrings():
    source = (
        'def f(root, step):\n    """Writes checkpoints/step_0000001.tmp."""\n'
        '    a = root / f"step_{step:07d}"\n'
        '    b = a.with_name(f"{a.name}.tmp")\n'
        '    c = a / "trainer_state.json"  # step_1.tmp\n'
        '    d = "step_scheduler_with_optimizer"\n'
    )
    assert [hit.split(":")[1] for hit in run_folder_names(source, "x.py")] == ["3", "4", "5"]


def test_only_rundir_names_the_run_folders_checkpoints_and_temporaries():
    found = [
        hit
        for path in sorted(PACKAGE.rglob("*.py"))
        if path.relative_to(PACKAGE).parts[0] != "core"
        and path.relative_to(PACKAGE).as_posix() not in RUN_FOLDER_NAMES_ALLOWED
        for hit in run_folder_names(path.read_text(), path.relative_to(PACKAGE).as_posix())
    ]
    assert not found, (
        "name the run folder's checkpoints and temporaries through RunDir (core/rundir.py: checkpoint_path, "
        "write_checkpoint, stage_model, CHECKPOINT_STATE, CHECKPOINT_BEST):\n" + "\n".join(found)
    )


# Issue 19: one loader protocol. The engine trains from a `TrainLoader` (data/loaders.py) that the caller chose
# where it prepared the data (`FitData.loader`); it never asks which kind of data or loader it has.
DATA_KINDS = {"IterableDataset", "Dataset", "StreamLoader", "MapLoader", "DataLoader", "StatefulDataLoader"}


def data_kind_branches(source: str, where: str) -> list[str]:
    """isinstance / issubclass / type() comparisons that name a kind of data or loader."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
            continue
        if node.func.id in ("isinstance", "issubclass") and len(node.args) == 2:
            named = {
                n.id if isinstance(n, ast.Name) else n.attr
                for n in ast.walk(node.args[1])
                if isinstance(n, (ast.Name, ast.Attribute))
            }
            if named & DATA_KINDS:
                found.append(f"{where}:{node.lineno}: {node.func.id}(..., {', '.join(sorted(named & DATA_KINDS))})")
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare) and any(
            isinstance(n, ast.Name) and n.id in DATA_KINDS for n in ast.walk(node)
        ):
            if any(
                isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "type" for n in ast.walk(node)
            ):
                found.append(f"{where}:{node.lineno}: type(...) compared with a data kind")
    return found


def test_the_data_kind_check_finds_isinstance_and_type_branches():
    source = (
        "def f(data, dl):\n"
        "    if isinstance(data.train, datasets.IterableDataset):\n        pass\n"
        "    if isinstance(dl, (StreamLoader, int)):\n        pass\n"
        "    if type(dl) is DataLoader:\n        pass\n"
        "    if isinstance(dl, dict):\n        pass\n"
    )
    assert [hit.split(":")[1] for hit in data_kind_branches(source, "x.py")] == ["2", "4", "6"]


def test_no_branch_on_the_kind_of_data_in_the_engine_or_train_py_and_no_streaming_import_in_the_engine():
    """train.py decides the kind once (`Prepared.streamed`, read from the config) and never asks the data."""
    checked = [*sorted((PACKAGE / "engine").rglob("*.py")), PACKAGE / "train.py"]
    branches = [
        hit for path in checked for hit in data_kind_branches(path.read_text(), path.relative_to(PACKAGE).as_posix())
    ]
    assert not branches, (
        "the engine trains from FitData.loader and train.py reads `streamed`, whatever the data:\n"
        + "\n".join(branches)
    )
    streaming = [
        _where(importer, line)
        for importer, imported, line, _ in imports()
        if layer(importer) == "engine" and imported == "data.streaming"
    ]
    assert not streaming, f"the engine imports data/streaming.py: {streaming}"


# ---------------------------------------------------------------------------- the adapter's contracts
# TaskAdapter composes one object per concern (adapters/base.py). Each contract stays small, and a module
# that needs one concern sees that contract only: it is handed `adapter.inputs` (or `.models`, `.card`),
# never the whole adapter, and uses no member that only another contract has.
ADAPTER_BASE = PACKAGE / "adapters" / "base.py"
CONTRACTS = ("ModelIO", "InputCodec", "CardSnippets")
MAX_CONTRACT_METHODS = 12
# What each module may see of an adapter: `hf_transfer/`-relative path (a folder: every module in it).
CONTRACT_USERS = {
    "data": "InputCodec",  # columns, decoding, per-example transforms
    "artifacts/card.py": "CardSnippets",  # library, Hub id, usage snippet
    "artifacts/model.py": "ModelIO",  # save_model, save_preprocessor
    "methods/strategies.py": "ModelIO",  # head, LoRA targets
}
WHOLE_ADAPTER = {"TaskAdapter"}  # the composite, by name: a module that names it could reach every concern
CONCERNS = {"models", "inputs", "card"}  # the composite's attributes (taken off something named *adapter)
# Attributes named like another contract's member that are not the adapter's, by module.
CONTRACT_NAMESAKES = {"artifacts/card.py": {"augmentation"}}  # CardFacts.augmentation: words handed over


def contract_members() -> dict[str, tuple[set[str], set[str]]]:
    """Each contract's public (methods and properties, class attributes), read from adapters/base.py."""
    tree = ast.parse(ADAPTER_BASE.read_text())
    found: dict[str, tuple[set[str], set[str]]] = {}
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name in CONTRACTS:
            methods = {f.name for f in node.body if isinstance(f, ast.FunctionDef) and not f.name.startswith("_")}
            attributes = {a.target.id for a in node.body if isinstance(a, ast.AnnAssign)} - {
                "task"
            }  # task: the run's own, which every layer reads from the config too
            found[node.name] = (methods, {a for a in attributes if not a.startswith("_")})
    return found


def contract_violations(
    source: str, path: str, allowed: str, members: dict[str, tuple[set[str], set[str]]]
) -> list[str]:
    """Where a module reaches past its contract `allowed`: it names the whole adapter, takes one of its
    concerns off an adapter, or uses (as an attribute) a member that only another contract has."""
    own = set().union(*members[allowed])
    foreign = set().union(*(set().union(*m) for name, m in members.items() if name != allowed)) - own
    foreign -= CONTRACT_NAMESAKES.get(path, set())
    hits = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute):
            concern = node.attr in CONCERNS and ast.unparse(node.value).endswith("adapter")
            if node.attr in foreign or concern:
                hits.append(f"{path}:{node.lineno}: {node.attr}")
        elif isinstance(node, (ast.Name, ast.alias)):
            name = node.id if isinstance(node, ast.Name) else node.asname or node.name
            if name in WHOLE_ADAPTER:
                hits.append(f"{path}:{node.lineno}: {name}")
    return hits


def test_each_adapter_contract_stays_small():
    members = contract_members()
    assert sorted(members) == sorted(CONTRACTS), "adapters/base.py defines the three contracts"
    for name, (methods, _) in members.items():
        assert 3 <= len(methods) <= MAX_CONTRACT_METHODS, f"{name} has {len(methods)} public methods: {sorted(methods)}"
    every = [set().union(*m) for m in members.values()]
    assert not set.intersection(*every), "no member is in every contract"


def test_the_contract_check_finds_a_reach_past_the_contract():
    members = contract_members()
    source = (
        "from ..adapters.base import InputCodec, TaskAdapter\n"
        "def f(adapter: InputCodec, run: TaskAdapter, rows):\n"
        "    adapter.decode(rows, False)\n"  # its own: fine
        "    run.adapter.models.build_model([])\n"  # one of the whole adapter's concerns, a model member
        "    return adapter.usage_snippet(None, [], False, None)\n"  # a card member
    )
    hits = [hit.split(":", 1)[1] for hit in contract_violations(source, "x.py", "InputCodec", members)]
    assert sorted(hits) == ["1: TaskAdapter", "2: TaskAdapter", "4: build_model", "4: models", "5: usage_snippet"]


def test_modules_see_only_the_adapter_contract_they_need():
    members = contract_members()
    found = []
    for where, allowed in CONTRACT_USERS.items():
        paths = sorted((PACKAGE / where).glob("*.py")) if (PACKAGE / where).is_dir() else [PACKAGE / where]
        for path in paths:
            found += contract_violations(path.read_text(), path.relative_to(PACKAGE).as_posix(), allowed, members)
    assert not found, (
        "hand these modules the one concern they need (adapter.models, adapter.inputs, adapter.card: "
        "adapters/base.py) and use only its contract:\n" + "\n".join(found)
    )
