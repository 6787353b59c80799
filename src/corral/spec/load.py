"""Read `corral.yaml` into a validated `Spec`, with a position for every problem.

The flow is: read the text → parse it (syntax errors keep ruamel's line/column) → find
duplicate keys on the node tree → load it round-trip (mappings and sequences remember where
each key and item starts) → validate with the pydantic models → check what spans several
fields. Every problem of a file is collected and raised together as one `SpecError`, each
pointing at a line, a column and a dotted field path such as `images.app.copy[0].src`.
Positions are 1-based, as editors show them.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, get_args, get_origin

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.events import (
    AliasEvent,
    CollectionEndEvent,
    CollectionStartEvent,
    MappingStartEvent,
    ScalarEvent,
)
from ruamel.yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from ruamel.yaml.reader import ReaderError
from ruamel.yaml.scalarbool import ScalarBoolean

from corral.errors import MissingFileError, SpecError, SpecProblem, UsageError
from corral.spec.model import NAME_PATTERN, Spec
from corral.volumes import check_mount_paths

SPEC_FILENAME = "corral.yaml"

FieldPath = tuple[str | int, ...]
Position = tuple[int, int]


@dataclass(frozen=True)
class LoadedSpec:
    """A validated spec and where it came from; `position` points back into the file."""

    spec: Spec
    path: Path
    base_dir: Path
    project: str
    _tree: Any = field(default=None, repr=False, compare=False)

    def position(self, path: FieldPath, *, key: bool = False) -> Position | None:
        """(line, column), 1-based, of the value at `path` (of its key if `key`), e.g.
        `("images", "app", "copy", 0, "src")`. None when the file does not write that field."""
        spot = _locate(self._tree, path)
        if not spot.found_all:
            return None
        return spot.key if key and spot.key else spot.value


class MissingSourceError(MissingFileError):
    """Copy sources the spec names do not exist; `problems` say where each one is named."""

    def __init__(self, problems: list[SpecProblem], *, base_dir: Path) -> None:
        self.problems = problems
        super().__init__(
            "\n".join(p.render() for p in problems),
            hint=f"copy.src is relative to the spec's directory ({base_dir}): "
            "create what is missing or fix the path.",
        )


def load_spec(path: str | Path) -> LoadedSpec:
    """Load and validate a spec file (or the `corral.yaml` inside a directory).

    Raises MissingFileError when the file (or a copy source it names) is missing, and one
    SpecError holding every problem found in the file.
    """
    given = Path(path)
    if given.is_dir():
        given = given / SPEC_FILENAME
    absolute = given.absolute()
    shown = str(given)
    text = _read(given, absolute)
    tree = _parse(text, shown)
    spec = _validate(tree, shown)
    base_dir = absolute.parent
    loaded = LoadedSpec(
        spec=spec,
        path=absolute,
        base_dir=base_dir,
        project=spec.project or project_name(base_dir.name),
        _tree=tree,
    )
    _check_copy_sources(loaded, shown)
    check_mount_paths(loaded)  # volumes over runtime paths, secrets' files, other volumes
    return loaded


def project_name(text: str) -> str:
    """A valid project name made from a directory name: `My_App 2` → `my-app-2`."""
    name = re.sub(r"[^a-z0-9]+", "-", text.lower()).lstrip("-0123456789")
    name = name[:40].rstrip("-")
    return name if re.match(NAME_PATTERN, name) else "corral"


# --- reading and parsing -------------------------------------------------------------------


def _read(given: Path, absolute: Path) -> str:
    try:
        data = given.read_bytes()
    except FileNotFoundError:
        raise MissingFileError(
            f"no {given.name} at {absolute.parent}",
            hint="run from the directory that holds it or pass --file",
        ) from None
    except OSError as exc:
        raise UsageError(f"cannot read {given}: {exc.strerror}") from exc
    try:
        return data.decode("utf-8-sig")  # an editor's byte-order mark is not content
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise _whole_file_error(
            str(given), (line, column), "the file is not valid UTF-8", "save it as UTF-8"
        ) from None


def _parse(text: str, shown: str) -> CommentedMap:
    """The round-trip tree of a spec, or a SpecError for syntax, duplicate keys, wrong shape."""
    try:
        root = YAML(typ="rt").compose(text)
    except YAMLError as exc:
        raise SpecError([_syntax_problem(exc, text, shown)], file=shown) from None
    duplicates = list(_duplicate_keys(root, (), set()))
    if duplicates:
        problems = [
            SpecProblem(
                file=shown,
                line=node.start_mark.line + 1,
                column=node.start_mark.column + 1,
                path=_dotted(parts),
                message=f"duplicate key {node.value!r}",
                hint=f"it is already set on line {first.start_mark.line + 1}; keep one",
            )
            for parts, node, first in duplicates
        ]
        raise SpecError(problems, file=shown)
    try:
        tree = YAML(typ="rt").load(text)
    except YAMLError as exc:  # a safety net: compose has already seen the syntax
        raise SpecError([_syntax_problem(exc, text, shown)], file=shown) from None
    if tree is None:
        raise _whole_file_error(
            shown,
            (1, 1),
            "the spec is empty",
            "describe your `images:` and `services:` (see examples/hello)",
        )
    if not isinstance(tree, CommentedMap):
        raise _whole_file_error(
            shown,
            (root.start_mark.line + 1, root.start_mark.column + 1),
            f"the top level must be a mapping of fields, got {_show(tree)}",
            f"fields: {', '.join(_aliases(Spec))}",
        )
    return tree


def _whole_file_error(shown: str, position: Position, message: str, hint: str) -> SpecError:
    line, column = position
    problem = SpecProblem(file=shown, line=line, column=column, path="", message=message, hint=hint)
    return SpecError([problem], file=shown)


def _syntax_problem(exc: YAMLError, text: str, shown: str) -> SpecProblem:
    line = column = None
    message, hint = "invalid YAML", None
    if isinstance(exc, MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        if mark is not None:
            line, column = mark.line + 1, mark.column + 1
        problem = exc.problem or exc.context or "invalid YAML"
        message = f"invalid YAML: {problem}"
        if exc.context and exc.problem:
            message += f" ({exc.context})"
        if "'\\t'" in problem:
            message = "a tab character: YAML indents with spaces only"
            hint = "replace the tab with spaces"
        elif "<block end>" in problem or "indentation" in problem:
            hint = message
            message = "bad indentation: the fields of one mapping must start in the same column"
        elif "mapping values are not allowed" in problem:
            hint = "quote a value that contains ': ', or check the indentation"
        elif "another document" in problem:
            message = "the file holds more than one YAML document"
            hint = "keep one: remove the `---` line and what follows it, or merge them"
    elif isinstance(exc, ReaderError):
        before = text[: exc.position]
        line = before.count("\n") + 1
        column = exc.position - (before.rfind("\n") + 1) + 1
        message = f"invalid YAML: {exc.reason}"
        hint = "remove the control character"
    return SpecProblem(
        file=shown,
        line=line,
        column=column,
        path=_syntax_path(text),
        message=message,
        hint=hint,
    )


def _syntax_path(text: str) -> str:
    """The field the parser was inside when it failed, from the events it produced so far."""
    # One frame per open collection: [is_mapping, key (mapping) or index (sequence),
    # whether the mapping's current key has been read and its value is being parsed].
    stack: list[list[Any]] = []

    def node_begins(key: Any, *, collection: bool) -> None:
        if not stack:
            return
        frame = stack[-1]
        if not frame[0]:
            frame[1] += 1
        elif not frame[2]:
            frame[1], frame[2] = key, True
        elif not collection:
            frame[2] = False  # a scalar value ends the entry; a collection ends at its end

    try:
        for event in YAML(typ="rt").parse(text):
            if isinstance(event, ScalarEvent | AliasEvent):
                node_begins(getattr(event, "value", "*"), collection=False)
            elif isinstance(event, CollectionStartEvent):
                node_begins("?", collection=True)
                stack.append([isinstance(event, MappingStartEvent), -1, False])
            elif isinstance(event, CollectionEndEvent) and stack:
                stack.pop()
                if stack and stack[-1][0]:
                    stack[-1][2] = False
    except YAMLError:
        pass
    parts: list[str | int] = []
    for is_mapping, where, in_value in stack:
        if is_mapping and in_value:
            parts.append(str(where))
        elif not is_mapping and where >= 0:
            parts.append(where)
    return _dotted(tuple(parts))


def _duplicate_keys(
    node: Node, parts: FieldPath, seen: set[int]
) -> Iterator[tuple[FieldPath, ScalarNode, ScalarNode]]:
    """(path, second key, first key) for each key written twice in one mapping."""
    if id(node) in seen:  # an alias to a node already walked
        return
    seen.add(id(node))
    if isinstance(node, MappingNode):
        firsts: dict[tuple[Any, Any], ScalarNode] = {}
        for key, value in node.value:
            if not isinstance(key, ScalarNode):
                continue
            ident = (key.tag, key.value)
            if key.value == "<<":  # merge keys may repeat
                pass
            elif ident in firsts:
                yield (*parts, key.value), key, firsts[ident]
            else:
                firsts[ident] = key
            yield from _duplicate_keys(value, (*parts, key.value), seen)
    elif isinstance(node, SequenceNode):
        for index, item in enumerate(node.value):
            yield from _duplicate_keys(item, (*parts, index), seen)


# --- validation ----------------------------------------------------------------------------


def _validate(tree: CommentedMap, shown: str) -> Spec:
    spec: Spec | None = None
    problems: list[SpecProblem] = []
    try:
        # Strict: YAML already types its scalars, so `replicas: true` or `port: "80"` is a
        # mistake to report, not something to coerce. By alias only: the file says `from`.
        spec = Spec.model_validate(_plain(tree), strict=True, by_alias=True, by_name=False)
    except ValidationError as exc:
        problems.extend(_problem_from(error, tree, shown) for error in exc.errors())
    problems.extend(_reference_problems(tree, shown))
    if problems or spec is None:
        unique = {(p.line, p.column, p.path, p.message): p for p in problems}
        ordered = sorted(unique.values(), key=lambda p: (p.line or 0, p.column or 0, p.path))
        raise SpecError(ordered, file=shown)
    return spec


def _plain(value: Any) -> Any:
    """ruamel's round-trip types (CommentedMap, ScalarFloat, ...) as plain Python values."""
    if isinstance(value, Mapping):
        # Only scalar keys are converted: a complex key (`? [a, b]`) must stay hashable.
        return {
            (_plain(k) if isinstance(k, str | int | float) else k): _plain(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_plain(item) for item in value]
    if isinstance(value, bool | ScalarBoolean):
        return bool(value)
    for kind in (str, int, float):
        if isinstance(value, kind):
            return kind(value)
    return value


_EXPECTED = {
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "a whole number",
    "float_type": "a number",
    "float_parsing": "a number",
    "string_type": "a string",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "dict_type": "a mapping (key: value)",
    "model_type": "a mapping of fields",
    "model_attributes_type": "a mapping of fields",
    "list_type": "a list",
}
_BOUNDS = {
    "greater_than_equal": ("ge", "at least"),
    "greater_than": ("gt", "more than"),
    "less_than_equal": ("le", "at most"),
    "less_than": ("lt", "less than"),
}


def _problem_from(error: ErrorDetails, tree: CommentedMap, shown: str) -> SpecProblem:
    """One pydantic error as a problem at its place in the YAML, in plain words."""
    kind, value, ctx = error["type"], error.get("input"), error.get("ctx", {})
    loc, tag = _strip_union_tag(error["loc"])
    spot = _locate(tree, loc)
    position, path, hint = spot.value, spot.path, None
    if kind == "extra_forbidden":
        name = str(loc[-1])
        allowed = _aliases(_model_at(spot.parts[:-1], tag))
        message = f"unknown field {name!r}"
        close = difflib.get_close_matches(name, allowed, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        hint += f"allowed fields: {', '.join(allowed)}"
    elif kind == "missing":
        name = str(spot.rest[0]) if spot.rest else str(loc[-1])
        path = _dotted((*spot.parts, name))
        message = f"missing required field {name!r}"
        description = _description(_model_at(spot.parts, tag), name)
        hint = f"add `{name}:` here" + (f"; {description}" if description else "")
    elif kind in ("value_error", "assertion_error"):
        message = str(ctx.get("error", error["msg"]))
        if message.startswith(repr(value)):  # the models quote a value Python's way
            message = _show(value) + message[len(repr(value)) :]
    elif kind in _EXPECTED:
        message = f"expected {_EXPECTED[kind]}, got {_show(value)}"
        if kind == "string_type" and isinstance(value, int | float | date):
            hint = f'quote it: "{_show(value)}"'
        elif kind.startswith("model"):
            hint = f"fields: {', '.join(_aliases(_model_at(spot.parts, tag)))}"
    elif kind in _BOUNDS:
        bound_name, words = _BOUNDS[kind]
        message = f"must be {words} {ctx.get(bound_name)}, got {_show(value)}"
    elif kind == "literal_error":
        message = f"expected {ctx.get('expected')}, got {_show(value)}"
    else:  # a rule without its own wording: pydantic's one-line message is still plain
        message = error["msg"]
    if kind == "extra_forbidden" or "[key]" in loc:  # the key itself is what is wrong
        position = spot.key or position
    line, column = position or (None, None)
    return SpecProblem(file=shown, line=line, column=column, path=path, message=message, hint=hint)


def _show(value: Any) -> str:
    """A value as the user wrote it in YAML, short."""
    if value is None:
        return "an empty value"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return repr(value if len(value) <= 40 else value[:37] + "...")
    return str(value)


# --- positions -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Spot:
    parts: FieldPath  # the leading parts of the asked path that the file writes
    rest: FieldPath  # the parts it does not (a missing field, or a union member's tag)
    value: Position | None  # where the deepest written part's value starts
    key: Position | None  # where its key starts, when it is a mapping entry

    @property
    def found_all(self) -> bool:
        return not [p for p in self.rest if p != "[key]"]

    @property
    def path(self) -> str:
        return _dotted(self.parts)


def _locate(tree: Any, loc: Sequence[str | int]) -> _Spot:
    node = tree
    value: Position | None = (tree.lc.line + 1, tree.lc.col + 1) if tree is not None else None
    key: Position | None = None
    parts: list[str | int] = []
    for index, part in enumerate(loc):
        if part == "[key]":
            continue
        if isinstance(node, CommentedMap) and _has_key(node, part):
            where = node.lc.data.get(part)  # None for a key brought in by a `<<` merge
            key = (where[0] + 1, where[1] + 1) if where else None
            if node[part] is None:  # ruamel places an empty value at the next token
                value = key or value
            elif where:
                value = (where[2] + 1, where[3] + 1)
            node = node[part]
            # A key that is not a string (`1:`) must not read as a list index in the path.
            parts.append(part if isinstance(part, str) else str(part).lower())
        elif isinstance(node, CommentedSeq) and isinstance(part, int) and 0 <= part < len(node):
            line, column = node.lc.item(part)
            value, key, node = (line + 1, column + 1), None, node[part]
            parts.append(part)
        else:
            return _Spot(tuple(parts), tuple(loc[index:]), value, key)
    return _Spot(tuple(parts), (), value, key)


def _has_key(mapping: CommentedMap, key: Any) -> bool:
    try:
        return key in mapping
    except TypeError:  # an unhashable part can never be a key
        return False


def _dotted(parts: FieldPath) -> str:
    text = ""
    for part in parts:
        if isinstance(part, int) and not isinstance(part, bool):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


# --- the models behind a path --------------------------------------------------------------


def _strip_union_tag(loc: Sequence[str | int]) -> tuple[tuple[str | int, ...], str | None]:
    """pydantic puts a discriminated union's tag in the loc (`strategy.canary.steps`); the
    file does not have it, so drop it and return it (it names the member that applies)."""
    kept: list[str | int] = []
    tag = None
    for index, part in enumerate(loc):
        if index and loc[index - 1] == "strategy" and part in _STRATEGY_TAGS:
            tag = str(part)
            continue
        kept.append(part)
    return tuple(kept), tag


_STRATEGY_TAGS = frozenset({"rolling", "blue_green", "canary"})


def _model_at(parts: FieldPath, tag: str | None = None) -> type[BaseModel] | None:
    """The model that validates the mapping at `parts` (e.g. ServiceSpec for services.web)."""
    current: Any = Spec
    for part in parts:
        current = _union_member(_unwrap(current), tag)
        if isinstance(current, type) and issubclass(current, BaseModel):
            current = next(
                (f.annotation for n, f in current.model_fields.items() if (f.alias or n) == part),
                None,
            )
        elif get_origin(current) is dict:
            current = get_args(current)[1]
        elif get_origin(current) is list:
            current = get_args(current)[0]
        else:
            return None
    current = _union_member(_unwrap(current), tag)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _union_member(annotation: Any, tag: str | None) -> Any:
    """The member of a union of models whose `type` tag is `tag` (else the annotation)."""
    # members may be `Annotated[Model, Tag(...)]` (a discriminated union): look inside
    unwrapped = [_unwrap(a) for a in get_args(annotation)]
    members = [a for a in unwrapped if isinstance(a, type) and issubclass(a, BaseModel)]
    if get_origin(annotation) in (dict, list) or len(members) < 2:
        return annotation
    for member in members:
        field = member.model_fields.get("type")
        if field is not None and tag in get_args(field.annotation):
            return member
    return members[0]


def _unwrap(annotation: Any) -> Any:
    """`RouteSpec | None` → RouteSpec; `Annotated[X, ...]` → X."""
    if hasattr(annotation, "__metadata__"):
        annotation = annotation.__origin__
    args = [a for a in get_args(annotation) if a is not type(None)]
    if get_origin(annotation) not in (dict, list) and len(args) == 1:
        return _unwrap(args[0])
    return annotation


def _aliases(model: type[BaseModel] | None) -> list[str]:
    if model is None:
        return []
    return [info.alias or name for name, info in model.model_fields.items()]


def _description(model: type[BaseModel] | None, alias: str) -> str | None:
    if model is None:
        return None
    for name, info in model.model_fields.items():
        if (info.alias or name) == alias:
            return info.description
    return None


# --- rules across fields -------------------------------------------------------------------


def _reference_problems(tree: CommentedMap, shown: str) -> list[SpecProblem]:
    """Each service names a defined image; no two services share a route port.

    Checked on the raw tree, so these are reported alongside the model's problems; a value of
    the wrong type is left to the model's own message.
    """
    services, images = tree.get("services"), tree.get("images", {})
    if not isinstance(services, Mapping) or not isinstance(images, Mapping):
        return []
    problems: list[SpecProblem] = []

    def report(parts: FieldPath, message: str, hint: str) -> None:
        spot = _locate(tree, parts)
        line, column = spot.value or (None, None)
        problems.append(
            SpecProblem(
                file=shown, line=line, column=column, path=spot.path, message=message, hint=hint
            )
        )

    ports: dict[int, str] = {}
    for name, service in services.items():
        if not isinstance(service, Mapping):
            continue
        image = service.get("image")
        # `web@prod` / `web@sha256:…` name a channel or digest of the image `web`.
        if isinstance(image, str) and image.partition("@")[0] not in images:
            known = [str(i) for i in images]
            close = difflib.get_close_matches(image, known, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            hint += f"images: {', '.join(known)}" if known else "no images are defined"
            report(("services", name, "image"), f"no image named {image!r}", hint)
        route = service.get("route")
        port = route.get("port") if isinstance(route, Mapping) else None
        if not isinstance(port, int) or isinstance(port, bool):
            continue
        if port in ports:
            report(
                ("services", name, "route", "port"),
                f"route port {port} is already the route port of service {ports[port]!r}",
                "give each service its own route port",
            )
        else:
            ports[port] = str(name)
    return problems


def _check_copy_sources(loaded: LoadedSpec, shown: str) -> None:
    problems: list[SpecProblem] = []
    for image_name, image in loaded.spec.images.items():
        for index, step in enumerate(image.copy_):
            source = loaded.base_dir / step.src
            if source.exists():
                continue
            parts: FieldPath = ("images", image_name, "copy", index, "src")
            line, column = loaded.position(parts) or (None, None)
            problems.append(
                SpecProblem(
                    file=shown,
                    line=line,
                    column=column,
                    path=_dotted(parts),
                    message=f"copy source {step.src!r} does not exist (looked for {source})",
                )
            )
    if problems:
        raise MissingSourceError(problems, base_dir=loaded.base_dir)
