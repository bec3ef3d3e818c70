"""YAML read into pydantic models, with errors that name the key path and the line.

YAML is always read with ``yaml.safe_load`` semantics (``SafeLoader``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from flowtopo.errors import InputError

M = TypeVar("M", bound=BaseModel)


def _line_of(root: yaml.Node | None, loc: tuple[int | str, ...]) -> int | None:
    """1-based line of the YAML node at key path ``loc``, or of its deepest existing parent."""
    node, line = root, None
    for key in loc:
        if node is None:
            break
        line = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            node = next((v for k, v in node.value if k.value == key), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(
                node.value):
            node = node.value[key]
        else:
            node = None
    return node.start_mark.line + 1 if node is not None else line


def parse_spec(text: str, model: type[M], source: str) -> M:
    """Parse YAML ``text`` into ``model``.

    Raises:
        InputError: one line naming ``source``, the key path, the line and the problem.

    """
    loader = yaml.SafeLoader(text)  # one parse: the node tree (for line numbers) and its data
    try:
        root = loader.get_single_node()
        data = loader.construct_document(root) if root is not None else None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise InputError(f"{source}:{where}: invalid YAML ({problem})") from None
    finally:
        loader.dispose()
    if not isinstance(data, dict):
        raise InputError(f"{source}: expected a mapping of keys at the top, got "
                         f"{type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as err:
        e = err.errors()[0]
        loc = tuple(e["loc"])
        path = ".".join(str(p) for p in loc) or "(top)"
        line = _line_of(root, loc)
        at = f" line {line}" if line else ""
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        more = f" (+{err.error_count() - 1} more)" if err.error_count() > 1 else ""
        raise InputError(f"{source}:{at}: {path}: {msg}{more}") from None


def load_spec(path: str | Path, model: type[M]) -> M:
    """Read a YAML file into ``model`` (see `parse_spec`)."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: no such file")
    try:
        text = p.read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"{p}: cannot read ({err})") from None
    return parse_spec(text, model, str(p))


def override(spec: M, changes: dict[str, Any], source: str = "command line") -> M:
    """``spec`` with ``changes`` applied (dotted keys, e.g. ``train.epochs``), validated again.

    Raises:
        InputError: one line naming the key and the problem (``--epochs 0`` is refused like
            ``epochs: 0`` in the YAML).

    """
    data = spec.model_dump(mode="python")
    for dotted, value in changes.items():
        node = data
        *parents, last = dotted.split(".")
        for key in parents:
            node = node[key]
        node[last] = value
    try:
        return type(spec).model_validate(data)
    except ValidationError as err:
        e = err.errors()[0]
        path = ".".join(str(p) for p in e["loc"]) or "(top)"
        raise InputError(f"{source}: {path}: {e['msg']}") from None
