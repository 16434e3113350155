"""YAML front matter: settings for one file, written above its text between `---` lines.

```
---
seed: 42
steps: 30
---
A lighthouse on a rocky coast at dusk
```

The settings are checked by the caller's pydantic model (extra="forbid"), and every error says
the line in the file, the key, and what is allowed, as rules.yaml errors do.
"""

from __future__ import annotations

import re
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from caixa.errors import InputError

M = TypeVar("M", bound=BaseModel)
OPEN = re.compile(r"\A---[ \t]*\n")
CLOSE = re.compile(r"^(?:---|\.\.\.)[ \t]*$\n?", re.MULTILINE)


def split(text: str) -> tuple[str, str, int]:
    """The front matter's YAML (empty when there is none), the body after it, and the file line
    where the YAML starts. Line endings are normalised to \\n first."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    opening = OPEN.match(text)
    if opening is None:
        return "", text, 0
    closing = CLOSE.search(text, opening.end())
    if closing is None:
        raise InputError(
            "the front matter opened by '---' on line 1 is never closed: end it with a line "
            "holding only '---', then write the text below it"
        )
    return text[opening.end() : closing.start()], text[closing.end() :], 2


def parse(text: str, model: type[M]) -> tuple[M, str]:
    """The settings in `text`'s front matter (defaults when it has none) and the body."""
    raw, body, first = split(text)
    values, lines = _load(raw, first)
    try:
        return model.model_validate(values), body
    except ValidationError as exc:
        raise InputError(_describe(exc, model, lines)) from exc


def _load(raw: str, first: int) -> tuple[dict[str, Any], dict[str, int]]:
    """The mapping, and the file line of each top-level key."""
    try:
        node = yaml.compose(raw, Loader=yaml.SafeLoader)
        data = yaml.safe_load(raw)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + first}: " if mark else ""
        raise InputError(
            f"the front matter is not valid YAML: {where}{exc.problem or exc}"
        ) from exc
    except yaml.YAMLError as exc:  # a control character: the reader's error has no mark
        raise InputError(f"the front matter is not valid YAML: {exc}") from exc
    if node is None:
        return {}, {}
    if not isinstance(node, yaml.MappingNode):
        raise InputError(
            "the front matter must be 'key: value' lines (e.g. 'seed: 42'), "
            f"not a {node.id} (line {node.start_mark.line + first})"
        )
    lines: dict[str, int] = {}
    for key, _ in node.value:
        line = key.start_mark.line + first
        if key.value in lines:
            raise InputError(
                f"the front matter gives {key.value!r} twice (lines {lines[key.value]} and {line})"
            )
        lines[key.value] = line
    return {str(k): v for k, v in data.items()}, lines


def _describe(exc: ValidationError, model: type[BaseModel], lines: dict[str, int]) -> str:
    allowed = ", ".join(model.model_fields)
    problems = []
    for err in exc.errors():
        key = str(err["loc"][0]) if err["loc"] else ""
        where = f"line {lines[key]}: " if key in lines else ""
        if err["type"] == "extra_forbidden":
            problems.append(f"{where}unknown key {key!r} (allowed: {allowed})")
        else:
            message = err["msg"].removeprefix("Value error, ")
            problems.append(f"{where}{key}: {message} (got {err['input']!r})")
    return "the front matter is not valid: " + "; ".join(problems)
