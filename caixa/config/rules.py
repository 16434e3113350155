"""rules.yaml: pydantic models with unknown keys refused, and errors that name file:line and key.

A rule says which inbox files it takes (glob and content type), the ordered steps they go
through, where outputs land, and what happens to the source afterwards. The first rule whose
inbox and match fit a file wins.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import string
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from caixa import filetypes
from caixa.config import yamlmarks
from caixa.display import shown
from caixa.errors import RulesError
from caixa.pipelines.base import STEP_FIELDS, Step
from caixa.pipelines.registry import StepRegistry, default_registry

OnSuccess = Literal["archive", "delete", "keep"]
TEMPLATE_FIELDS = STEP_FIELDS | {
    "rule",
    "stem",
    "name",
    "ext",
    "inbox",
    "subdir",
    "type",
    "date",
    "year",
    "month",
    "day",
}


def _as_list(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


def _step_entry(value: Any) -> Any:
    """`- copy` or `- ocr: {dpi: 300}` become {name, params}."""
    if isinstance(value, str):
        return {"name": value, "params": {}}
    if isinstance(value, dict) and len(value) == 1:
        ((name, params),) = value.items()
        return {"name": name, "params": {} if params is None else params}
    raise ValueError(
        "a step is a name (`- copy`) or one name with its parameters (`- ocr: {dpi: 300}`)"
    )


StrList = Annotated[list[str], BeforeValidator(_as_list)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StepSpec(Strict):
    name: str
    params: dict[str, Any] = Field(default_factory=dict)
    # the lanes' settings, copied from the step's rule: they change when and where it runs,
    # never what it makes, so they are left out of the rule's version
    priority: int = 0
    timeout: float | None = None
    cpu_fallback: bool = False
    cluster: bool = False
    # what the step's class says of these params, learned once when the rules load
    resource: str = "cpu"  # the lane that runs it
    model: str | None = None  # the model it loads, for the accelerator lane's grouping


class Match(Strict):
    glob: StrList = Field(default_factory=lambda: ["*"], description="file name patterns, any case")
    type: StrList = Field(
        default_factory=list, description="media types from content, e.g. image/*"
    )


class Defaults(Strict):
    outputs: Path = Field(Path("outputs"), description="outputs root, relative to this file")
    processed: Path = Field(Path("processed"), description="where sources go after success")
    failed: Path = Field(Path("failed"), description="where failed sources go, with error.json")
    output: str = Field("{rule}/{stem}", description="output folder template under outputs")
    on_success: OnSuccess = "archive"
    recursive: bool = False
    poll: bool = Field(False, description="poll the inbox instead of watching for events")


class Rule(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    inbox: Annotated[list[Path], BeforeValidator(_as_list)] = Field(min_length=1)
    match: Match = Field(default_factory=Match)
    steps: list[Annotated[StepSpec, BeforeValidator(_step_entry)]] = Field(min_length=1)
    output: str | None = None
    on_success: OnSuccess | None = None
    recursive: bool | None = None
    poll: bool | None = None
    priority: int = Field(0, description="higher goes first on the accelerator lane")
    timeout: float | None = Field(
        None, gt=0, description="seconds each step may run (default: CAIXA_STEP_TIMEOUT)"
    )
    cpu_fallback: bool = Field(
        False, description="run a model on the CPU when the GPU runs out of memory"
    )
    cluster: bool = Field(
        False,
        description="CPU steps too go to an idle node of the Ray cluster (CAIXA_RAY_ADDRESS)"
        " when one can take them, else they run here",
    )


class RulesFile(Strict):
    version: Literal[1] = 1
    defaults: Defaults = Field(default_factory=Defaults)
    rules: list[Rule] = Field(min_length=1)


@dataclass(frozen=True)
class ResolvedRule:
    """A rule with defaults applied and paths made absolute."""

    name: str
    inboxes: tuple[Path, ...]
    globs: tuple[str, ...]
    types: tuple[str, ...]
    steps: tuple[StepSpec, ...]
    output: str
    on_success: OnSuccess
    recursive: bool
    poll: bool
    unavailable: tuple[str, ...]  # why each unavailable step cannot run; empty when all can
    version: str = field(init=False)

    def __post_init__(self) -> None:
        canonical = json.dumps(
            {
                "globs": self.globs,
                "types": self.types,
                "steps": [s.model_dump(include={"name", "params"}) for s in self.steps],
                "output": self.output,
                "on_success": self.on_success,
            },
            sort_keys=True,
            default=str,
        )
        object.__setattr__(self, "version", hashlib.sha256(canonical.encode()).hexdigest()[:12])

    @property
    def active(self) -> bool:
        return not self.unavailable

    def place(self, path: Path) -> tuple[Path, str] | None:
        """The inbox holding `path` and its path relative to it, if this rule watches there."""
        for inbox in self.inboxes:
            if path.is_relative_to(inbox):
                rel = path.relative_to(inbox).as_posix()
                if "/" in rel and not self.recursive:
                    continue
                return inbox, rel
        return None

    def glob_fits(self, rel: str) -> bool:
        name = rel.lower().rsplit("/", 1)[-1]
        return any(
            fnmatch.fnmatchcase(rel.lower() if "/" in g else name, g.lower()) for g in self.globs
        )


@dataclass(frozen=True)
class Verdict:
    """Which rule takes a file, and why each earlier rule did not."""

    rule: ResolvedRule | None
    inbox: Path | None
    rel: str | None
    media_type: str | None
    reasons: tuple[str, ...]


@dataclass(frozen=True)
class RuleSet:
    source: Path
    rules: tuple[ResolvedRule, ...]
    outputs: Path
    processed: Path
    failed: Path

    def inboxes(self) -> dict[Path, tuple[bool, bool]]:
        """Each watched folder with (recursive, forced polling), merged over the rules."""
        found: dict[Path, tuple[bool, bool]] = {}
        for rule in self.rules:
            for inbox in rule.inboxes:
                rec, poll = found.get(inbox, (False, False))
                found[inbox] = (rec or rule.recursive, poll or rule.poll)
        return found

    def by_name(self, name: str) -> ResolvedRule | None:
        return next((r for r in self.rules if r.name == name), None)

    def decide(self, path: Path, sniff: Callable[[Path], str] = filetypes.sniff) -> Verdict:
        reasons: list[str] = []
        media_type: str | None = None
        for rule in self.rules:
            placed = rule.place(path)
            if placed is None:
                reasons.append(f"{rule.name}: not in its inbox {_show(rule.inboxes)}")
                continue
            inbox, rel = placed
            if not rule.glob_fits(rel):
                reasons.append(f"{rule.name}: name fits none of {list(rule.globs)}")
                continue
            if rule.types:
                media_type = media_type or sniff(path)
                if not filetypes.matches(media_type, list(rule.types)):
                    reasons.append(f"{rule.name}: content is {media_type}, not {list(rule.types)}")
                    continue
            return Verdict(rule, inbox, rel, media_type, tuple(reasons))
        return Verdict(None, None, None, media_type, tuple(reasons))


def _show(paths: tuple[Path, ...]) -> str:
    return ", ".join(str(p) for p in paths)


def load(path: Path, registry: StepRegistry | None = None) -> RuleSet:
    """Read and validate a rules file; raise RulesError naming file:line and key."""
    registry = registry or default_registry()
    path = path.resolve()
    try:
        data, lines = yamlmarks.load(path)
    except FileNotFoundError as exc:
        raise RulesError(f"{path}: no such rules file") from exc
    except yamlmarks.YamlError as exc:
        raise RulesError(f"{path}:{exc.line or 1}: {exc}") from exc
    try:
        parsed = RulesFile.model_validate(data if data is not None else {})
    except ValidationError as exc:
        raise RulesError(_describe(path, lines, exc, RulesFile)) from exc
    problems: list[str] = []
    resolved = [
        _resolve(path, parsed, i, registry, lines, problems) for i in range(len(parsed.rules))
    ]
    names = [r.name for r in parsed.rules]
    for i, name in enumerate(names):
        if name in names[:i]:
            problems.append(
                _at(path, lines, ("rules", i, "name"), f"rule name {name!r} is used twice")
            )
    if problems:
        raise RulesError("\n".join(problems))
    base = path.parent
    return RuleSet(
        source=path,
        rules=tuple(resolved),
        outputs=_abs(base, parsed.defaults.outputs),
        processed=_abs(base, parsed.defaults.processed),
        failed=_abs(base, parsed.defaults.failed),
    )


def _abs(base: Path, p: Path) -> Path:
    return (base / p.expanduser()).resolve()


def _resolve(
    path: Path,
    parsed: RulesFile,
    i: int,
    registry: StepRegistry,
    lines: dict[yamlmarks.Loc, int],
    problems: list[str],
) -> ResolvedRule:
    rule, d = parsed.rules[i], parsed.defaults
    output = rule.output if rule.output is not None else d.output
    where = ("rules", i, "output") if rule.output is not None else ("defaults", "output")
    problems += [_at(path, lines, where, p) for p in template_problems(output)]
    steps, unavailable = [], []
    for j, spec in enumerate(rule.steps):
        found = registry.availability(spec.name)
        if found.step is None:
            unavailable.append(f"{spec.name}: {found.reason}")
            steps.append(spec)
            continue
        try:
            params = found.step.Params.model_validate(spec.params, context={"base": path.parent})
        except ValidationError as exc:
            loc = ("rules", i, "steps", j, spec.name)
            problems.append(_describe(path, lines, exc, found.step.Params, prefix=loc))
            steps.append(spec)
            continue
        missing_for = getattr(found.step, "missing_for", None)  # a plugin may not have it
        if missing_for is not None and (gaps := missing_for(params)):
            unavailable.append(f"{spec.name}: missing {'; '.join(gaps)}")
        steps.append(
            StepSpec(
                name=spec.name,
                params=params.model_dump(mode="json"),
                priority=rule.priority,
                timeout=rule.timeout,
                cpu_fallback=rule.cpu_fallback,
                cluster=rule.cluster,
                resource=found.step.resource,
                model=_model_of(found.step, params),
            )
        )
    return ResolvedRule(
        name=rule.name,
        inboxes=tuple(_abs(path.parent, p) for p in rule.inbox),
        globs=tuple(rule.match.glob),
        types=tuple(rule.match.type),
        steps=tuple(steps),
        output=output,
        on_success=rule.on_success or d.on_success,
        recursive=d.recursive if rule.recursive is None else rule.recursive,
        poll=d.poll if rule.poll is None else rule.poll,
        unavailable=tuple(unavailable),
    )


def template_problems(template: str) -> list[str]:
    try:
        fields = [f for _, f, spec, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as exc:
        return [f"output template {template!r} is malformed: {exc}"]
    allowed = ", ".join(sorted(TEMPLATE_FIELDS))
    return [
        f"output template uses {{{f}}}, which is not known (allowed: {allowed})"
        for f in fields
        if f not in TEMPLATE_FIELDS
    ]


def _at(path: Path, lines: dict[yamlmarks.Loc, int], loc: yamlmarks.Loc, message: str) -> str:
    # a key missing from an empty file is missing at its first line; a key is the user's text,
    # so it is escaped like any other name shown (a "\r" key must not break the line)
    where = shown(yamlmarks.dotted(loc))
    return f"{path}:{yamlmarks.line_of(lines, loc) or 1}: {where}: {message}"


def _describe(
    path: Path,
    lines: dict[yamlmarks.Loc, int],
    exc: ValidationError,
    model: type[BaseModel],
    prefix: yamlmarks.Loc = (),
) -> str:
    out = []
    for err in exc.errors():
        # pydantic's own tags dropped; a key the file names (unknown, missing) kept as written,
        # even one that looks like a tag ("[")
        raw = err["loc"]
        loc = tuple(part for part in raw[:-1] if not _is_validator_tag(part))
        if raw and (
            err["type"] in ("extra_forbidden", "missing") or not _is_validator_tag(raw[-1])
        ):
            loc = (*loc, raw[-1])
        full = (*prefix, *loc)
        if err["type"] == "extra_forbidden":
            allowed = ", ".join(_allowed_keys(model, loc[:-1])) or "none"
            message = f"unknown key {loc[-1]!r} (allowed: {allowed})"
        elif err["type"] == "missing":
            message = f"missing key {loc[-1]!r}"
        else:
            message = f"{err['msg']} (got {err['input']!r})"
        out.append(_at(path, lines, full, message))
    return "\n".join(out)


def _is_validator_tag(part: Any) -> bool:
    # pydantic inserts names of union members or validators such as "function-before[...]"
    return isinstance(part, str) and ("[" in part or part.startswith("function-"))


def _allowed_keys(model: type[BaseModel], loc: yamlmarks.Loc) -> list[str]:
    """The keys a model accepts at `loc`, found by walking its field annotations."""
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            current = _inner(current)
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return []
        info = current.model_fields.get(part)
        if info is None:
            return []
        current = info.annotation
    current = _inner(current)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return []


def _inner(annotation: Any) -> Any:
    """list[X], Annotated[X, ...] and X | None reduced to X."""
    while True:
        args = get_args(annotation)
        origin = get_origin(annotation)
        if origin is Annotated or origin is list:
            annotation = args[0]
        elif args and type(None) in args:
            annotation = next(a for a in args if a is not type(None))
        else:
            return annotation


def json_schema(registry: StepRegistry | None = None) -> dict[str, Any]:
    """The JSON Schema of rules.yaml for editors, with each available step's parameters."""
    registry = registry or default_registry()
    schema = RulesFile.model_json_schema()
    variants: list[dict[str, Any]] = []
    for name in registry.names():
        found = registry.availability(name)
        params = found.step.Params.model_json_schema() if found.step else {"type": "object"}
        variants.append({"const": name})
        variants.append(
            {
                "type": "object",
                "properties": {name: {"anyOf": [params, {"type": "null"}]}},
                "required": [name],
                "additionalProperties": False,
            }
        )
    schema["$defs"]["Rule"]["properties"]["steps"] = {
        "type": "array",
        "minItems": 1,
        "items": {"anyOf": variants} if variants else {},
        "description": "ordered steps: `- name` or `- name: {params}`",
    }
    schema["$defs"].pop("StepSpec", None)
    return schema


def _model_of(step: type[Step], params: BaseModel) -> str | None:
    """The model a step would load, for the lane to group by; a third-party step may not say,
    or fail to, which only costs the grouping."""
    model_of = getattr(step, "model_of", None)
    if model_of is None:
        return None
    try:
        return model_of(params)
    except Exception:
        return None
