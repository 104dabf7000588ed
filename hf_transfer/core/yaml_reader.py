"""Every YAML the package reads goes through `load_yaml`: config files, KEY=VALUE overrides, `rank
--candidates` files, a dataset folder's README front matter.

PyYAML's safe loader runs no code, but an alias (`*name`) repeats a whole subtree, so a few hundred
bytes of nested aliases ("billion laughs") stand for billions of values: loading is quick, but whatever
walks the result (a config merge, a copy) never ends. Here the document is measured before anything is
built from it: it may repeat at most MAX_REPEATED_NODES nodes through aliases, and may not contain
itself. A file without aliases is never refused, whatever its size.

Scalars are read as YAML 1.1 (PyYAML), except that `1e-3` is a number (as OmegaConf reads it, and as
anyone writing a learning rate means it) and dates stay strings.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError, HFTransferError

MAX_REPEATED_NODES = 10_000
_Base = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml's parser when installed; same results


class _TooLarge(Exception):
    pass


class _Loader(_Base):  # type: ignore[misc,valid-type]
    def construct_document(self, node: yaml.Node) -> Any:
        _check_expansion(node)
        return super().construct_document(node)


# `1e-3`, `5e4`, `1.0e3`: numbers (YAML 1.1 wants a dot and a signed exponent).
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"), list("-+0123456789")
)
_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in _Loader.yaml_implicit_resolvers.items()
}


def _check_expansion(root: yaml.Node) -> None:
    """Raise _TooLarge when aliases make the document more than MAX_REPEATED_NODES nodes larger than it
    is written, or make it contain itself. Each node's expanded size is counted once (memoised by node),
    so the check is linear in the written document."""
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()
    written = _written_size(root)
    limit = written + MAX_REPEATED_NODES

    def size(node: yaml.Node) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in open_nodes:
            raise _TooLarge("an alias refers to a node that contains it (the document would contain itself)")
        open_nodes.add(key)
        children: list[yaml.Node] = []
        if isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        elif isinstance(node, yaml.MappingNode):
            children = [part for pair in node.value for part in pair]
        total = 1
        for child in children:
            total += size(child)
            if total > limit:
                break
        open_nodes.discard(key)
        sizes[key] = total
        return total

    if size(root) > limit:
        raise _TooLarge(
            f"its aliases (*name) would repeat more than {MAX_REPEATED_NODES:,} nodes (it has {written:,} nodes as "
            "written), as a 'billion laughs' document does"
        )


def _written_size(root: yaml.Node) -> int:
    """Distinct nodes, as written (an alias adds nothing)."""
    seen: set[int] = set()
    stack = [root]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)
        elif isinstance(node, yaml.MappingNode):
            stack.extend(part for pair in node.value for part in pair)
    return len(seen)


def load_yaml(text: str, where: str, error: type[HFTransferError] = ConfigError) -> Any:
    """`text` read as YAML; `where` names it in the error ("Config file 'x.yaml'"), of type `error`."""
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader
    except _TooLarge as err:
        raise error(f"{where} is refused: {err}. Write the values out instead of repeating aliases.") from None
    except RecursionError:
        raise error(f"{where} is refused: it is nested too deeply to read.") from None
    except yaml.YAMLError as err:
        raise error(f"{where} is not valid YAML: {' '.join(str(err).split())}") from None


def read_yaml_file(path: Path, what: str, error: type[HFTransferError] = ConfigError) -> Any:
    """A YAML file (`what`: "Config file", "Candidates file", ...) read with `load_yaml`."""
    where = f"{what} {str(path)!r}"
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise error(f"{where} cannot be read: {type(err).__name__}: {err}") from None
    return load_yaml(text, where, error)


def read_front_matter(path: Path, error: type[HFTransferError] = ConfigError) -> Any:
    """The YAML block between the opening `---` lines of a Markdown file (a dataset card), or None."""
    text = path.read_text(encoding="utf-8", errors="replace")
    match = re.match(r"---[ \t]*\r?\n(.*?)(?:\r?\n)?^---[ \t]*$", text, re.DOTALL | re.MULTILINE)
    if match is None:
        return None
    return load_yaml(match.group(1), f"The YAML header of {str(path)!r}", error)
