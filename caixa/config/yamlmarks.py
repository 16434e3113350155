"""YAML loading that remembers the line of every key, so errors can say file:line and key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

Loc = tuple[str | int, ...]


class YamlError(ValueError):
    def __init__(self, line: int | None, message: str) -> None:
        super().__init__(message)
        self.line = line


def load(path: Path) -> tuple[Any, dict[Loc, int]]:
    """The document as plain data, and the 1-based line of each key and list item by path."""
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise YamlError(
            line, f"not UTF-8 text (byte {raw[exc.start]:#x}); save it as UTF-8"
        ) from exc
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        raise YamlError(mark.line + 1 if mark else None, str(exc.problem or exc)) from exc
    except yaml.reader.ReaderError as exc:  # a character YAML does not allow
        line = text[: exc.position].count("\n") + 1
        raise YamlError(line, f"character {exc.character:#x} is not allowed in YAML") from exc
    if node is None:
        return None, {}
    lines: dict[Loc, int] = {(): node.start_mark.line + 1}
    _index(node, (), lines)
    return data, lines


def _index(node: yaml.Node, loc: Loc, lines: dict[Loc, int]) -> None:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = key_node.value
            here = (*loc, key)
            if here in lines:
                raise YamlError(key_node.start_mark.line + 1, f"key {key!r} is given twice")
            lines[here] = key_node.start_mark.line + 1
            _index(value_node, here, lines)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            lines[(*loc, i)] = item.start_mark.line + 1
            _index(item, (*loc, i), lines)


def line_of(lines: dict[Loc, int], loc: Loc) -> int | None:
    """The line of the deepest part of `loc` that the file holds."""
    for end in range(len(loc), -1, -1):
        if loc[:end] in lines:
            return lines[loc[:end]]
    return None


def dotted(loc: Loc) -> str:
    """`rules[0].steps[1].ocr.dpi` from ("rules", 0, "steps", 1, "ocr", "dpi")."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"
