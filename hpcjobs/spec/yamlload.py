"""Safe YAML loading that remembers where every key and value came from.

We compose the YAML into PyYAML nodes with a safe loader and build plain Python
objects ourselves, so that we can:

* report ``file:line:col`` for any dotted path (:class:`SourceMap`);
* refuse duplicate keys (PyYAML silently keeps the last one);
* refuse alias bombs (a node budget counted while constructing, aliases included);
* refuse absurdly large scalars and integers;
* resolve scalars by the YAML 1.2 core schema, so ``NO``, ``on`` and ``010`` stay
  strings instead of becoming ``False``, ``True`` and ``8`` (YAML 1.1 surprises).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from hpcjobs.errors import Location, ValidationError

PathKey = tuple[str | int, ...]

MAX_FILE_BYTES = 8 * 1024 * 1024
MAX_NODES = 200_000
MAX_SCALAR_CHARS = 1_000_000
MAX_INT_DIGITS = 40
MAX_DEPTH = 64

_NULL = re.compile(r"^(?:~|null|Null|NULL|)$")
_BOOL_TRUE = re.compile(r"^(?:true|True|TRUE)$")
_BOOL_FALSE = re.compile(r"^(?:false|False|FALSE)$")
_INT10 = re.compile(r"^[-+]?[0-9]+$")
_INT8 = re.compile(r"^0o[0-7]+$")
_INT16 = re.compile(r"^0x[0-9a-fA-F]+$")
_FLOAT = re.compile(r"^[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?$")
_INF = re.compile(r"^[-+]?\.(?:inf|Inf|INF)$")
_NAN = re.compile(r"^\.(?:nan|NaN|NAN)$")


@dataclass
class SourceMap:
    """Locations of keys and values in one YAML document, by path."""

    file: str
    text: str = ""
    values: dict[PathKey, tuple[int, int]] = field(default_factory=dict)
    keys: dict[PathKey, tuple[int, int]] = field(default_factory=dict)
    #: paths that were set from the command line (``--set``), with the flag text
    overrides: dict[PathKey, str] = field(default_factory=dict)

    def find_text(self, path: PathKey, needle: str) -> Location:
        """Locate *needle* inside the value at *path* (e.g. an expression in a command)."""
        loc = self.locate(path)
        if loc.line is None or not self.text or loc.file.startswith("--set"):
            return loc
        lines = self.text.splitlines()
        for i in range(loc.line - 1, len(lines)):
            col = lines[i].find(needle)
            if col >= 0:
                return Location(self.file, i + 1, col + 1)
        return loc

    def locate(self, path: PathKey, *, key: bool = False) -> Location:
        """The best known location for *path*: itself, else its nearest ancestor."""
        p = tuple(path)
        while True:
            if p in self.overrides:
                return Location(f"--set {self.overrides[p]}")
            table = self.keys if key and p in self.keys else self.values
            if p in table:
                line, col = table[p]
                return Location(self.file, line, col)
            if key and p in self.values:
                line, col = self.values[p]
                return Location(self.file, line, col)
            if not p:
                return Location(self.file, 1, 1) if not self.file.startswith("--set") else Location(self.file)
            p = p[:-1]

    def sub(self, prefix: PathKey) -> SourceMap:
        """A view of the part below *prefix*, re-rooted at ()."""
        n = len(prefix)
        out = SourceMap(self.file, self.text)
        for src, dst in ((self.values, out.values), (self.keys, out.keys)):
            for k, v in src.items():
                if k[:n] == prefix:
                    dst[k[n:]] = v
        for k, s in self.overrides.items():
            if k[:n] == prefix:
                out.overrides[k[n:]] = s
        return out


PLAIN_TAG = "tag:hpcjobs:plain"
_CORE = "tag:yaml.org,2002:"
#: explicit tags a job file may use; anything else (!!python/..., !custom) is refused
ALLOWED_TAGS = {f"{_CORE}{t}" for t in ("str", "int", "float", "bool", "null", "map", "seq", "binary", "timestamp", "merge")}


class _Composer(yaml.SafeLoader):
    """A safe loader used only to compose nodes (we construct values ourselves)."""

    def resolve(self, kind: Any, value: Any, implicit: Any) -> Any:
        # Plain scalars are resolved later by the YAML 1.2 core schema (resolve_plain),
        # not by PyYAML's 1.1 rules, so mark them instead of guessing a type here.
        if kind is yaml.ScalarNode and implicit[0]:
            return f"{_CORE}merge" if value == "<<" else PLAIN_TAG
        return super().resolve(kind, value, implicit)


def _pos(node: yaml.Node) -> tuple[int, int]:
    return node.start_mark.line + 1, node.start_mark.column + 1


def dotted(path: PathKey) -> str:
    """``('inputs', 'lr')`` -> ``inputs.lr``; list indexes as ``[3]``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + part
    return out


class _Builder:
    def __init__(self, file: str) -> None:
        self.file = file
        self.smap = SourceMap(file)
        self.count = 0

    def error(self, node: yaml.Node, message: str, path: PathKey, hint: str | None = None) -> ValidationError:
        line, col = _pos(node)
        return ValidationError(message, hint=hint, location=Location(self.file, line, col), field=dotted(path) or None)

    def build(self, node: yaml.Node, path: PathKey, depth: int = 0) -> Any:
        self.count += 1
        if self.count > MAX_NODES:
            raise self.error(
                node,
                f"document too large: more than {MAX_NODES} nodes (after expanding aliases)",
                path,
                hint="this looks like a YAML alias bomb; job files never need this many values",
            )
        if depth > MAX_DEPTH:
            raise self.error(node, f"nesting deeper than {MAX_DEPTH} levels", path)
        self.smap.values.setdefault(path, _pos(node))
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, path, depth)
        if isinstance(node, yaml.SequenceNode):
            return [self.build(child, (*path, i), depth + 1) for i, child in enumerate(node.value)]
        assert isinstance(node, yaml.ScalarNode)
        return self._scalar(node, path)

    def _mapping(self, node: yaml.MappingNode, path: PathKey, depth: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        pairs: list[tuple[yaml.Node, yaml.Node]] = []
        for knode, vnode in node.value:
            if knode.tag == "tag:yaml.org,2002:merge":
                # `<<: *base` merges: expand, keys given explicitly win.
                merged = vnode.value if isinstance(vnode, yaml.SequenceNode) else [vnode]
                for m in merged:
                    if not isinstance(m, yaml.MappingNode):
                        raise self.error(m, "a merge key (<<) needs a mapping", path)
                    pairs.extend((k, v) for k, v in m.value if k.value not in {kk.value for kk, _ in node.value})
                continue
            pairs.append((knode, vnode))
        for knode, vnode in pairs:
            if not isinstance(knode, yaml.ScalarNode):
                raise self.error(knode, "mapping keys must be plain strings", path)
            key = knode.value
            if key in out:
                first = self.smap.keys.get((*path, key))
                where = f" (first defined on line {first[0]})" if first else ""
                raise self.error(
                    knode,
                    f"duplicate key '{key}'{where}",
                    (*path, key),
                    hint="YAML keeps only one of them; remove or rename the other",
                )
            self.smap.keys[(*path, key)] = _pos(knode)
            out[key] = self.build(vnode, (*path, key), depth + 1)
        return out

    def _scalar(self, node: yaml.ScalarNode, path: PathKey) -> Any:
        text = node.value
        if len(text) > MAX_SCALAR_CHARS:
            raise self.error(node, f"value longer than {MAX_SCALAR_CHARS} characters ({len(text)})", path)
        tag = node.tag
        if tag == PLAIN_TAG:
            return resolve_plain(text, lambda msg: self.error(node, msg, path))
        if tag not in ALLOWED_TAGS and tag not in (None, "?", "!"):
            raise self.error(node, f"unsupported YAML tag {tag}", path, hint="job files use plain YAML values only")
        if node.style in ("'", '"', "|", ">") or tag in (f"{_CORE}str", f"{_CORE}binary", f"{_CORE}timestamp", "!"):
            return text
        return resolve_plain(text, lambda msg: self.error(node, msg, path))


def resolve_plain(text: str, err: Any = None) -> Any:
    """Resolve an unquoted scalar by the YAML 1.2 core schema."""
    if _NULL.match(text):
        return None
    if _BOOL_TRUE.match(text):
        return True
    if _BOOL_FALSE.match(text):
        return False
    if _INT10.match(text) or _INT8.match(text) or _INT16.match(text):
        digits = text.lstrip("+-")
        if len(digits) > MAX_INT_DIGITS:
            if err is not None:
                raise err(f"integer with {len(digits)} digits is too large")
            raise ValueError("integer too large")
        if _INT8.match(text):
            return int(text[2:], 8)
        if _INT16.match(text):
            return int(text[2:], 16)
        return int(text)
    if _FLOAT.match(text):
        value = float(text)
        if math.isinf(value):
            return text  # "1e999" is a typo, not infinity; keep it a string
        return value
    if _INF.match(text):
        return float("-inf") if text.startswith("-") else float("inf")
    if _NAN.match(text):
        return float("nan")
    return text


def load_yaml_text(text: str, file: str) -> tuple[Any, SourceMap]:
    """Parse *text* (one YAML document) into plain objects and a :class:`SourceMap`."""
    if "\x00" in text:
        at = text.index("\x00")
        line = text.count("\n", 0, at) + 1
        col = at - (text.rfind("\n", 0, at) + 1) + 1
        raise ValidationError("file contains a NUL character", location=Location(file, line, col))
    try:
        loader = _Composer(text)
        try:
            node = loader.get_single_node()
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        loc = Location(file, mark.line + 1, mark.column + 1) if mark else Location(file)
        problem = exc.problem or exc.context or "invalid YAML"
        raise ValidationError(f"invalid YAML: {problem}", location=loc) from None
    except yaml.YAMLError as exc:
        raise ValidationError(f"invalid YAML: {exc}", location=Location(file)) from None
    builder = _Builder(file)
    builder.smap.text = text
    if node is None:
        return None, builder.smap
    data = builder.build(node, ())
    return data, builder.smap


def load_yaml_file(path: Path) -> tuple[Any, SourceMap]:
    """Read and parse a YAML file, refusing files that are absurdly large."""
    shown = str(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise ValidationError(f"file not found: {shown}") from None
    except OSError as exc:
        raise ValidationError(f"cannot read {shown}: {exc.strerror}") from None
    if path.is_dir():
        raise ValidationError(f"{shown} is a directory, not a YAML file")
    if size > MAX_FILE_BYTES:
        raise ValidationError(
            f"file is {size} bytes; job files larger than {MAX_FILE_BYTES} bytes are refused",
            location=Location(shown, 1),
        )
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ValidationError(f"file is not valid UTF-8 (byte {exc.start})", location=Location(shown, line)) from None
    return load_yaml_text(text, shown)


def walk(data: Any, path: PathKey = ()) -> Iterator[tuple[PathKey, Any]]:
    """Yield ``(path, value)`` for every node of a plain-object tree."""
    yield path, data
    if isinstance(data, dict):
        for k, v in data.items():
            yield from walk(v, (*path, k))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            yield from walk(v, (*path, i))
