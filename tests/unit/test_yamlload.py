"""Tests for hpcjobs.spec.yamlload: safe YAML with locations, YAML 1.2 scalars, refusals."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from hpcjobs.errors import ValidationError
from hpcjobs.spec import yamlload
from hpcjobs.spec.yamlload import SourceMap, dotted, load_yaml_file, load_yaml_text, resolve_plain, walk


def load(text: str) -> object:
    return load_yaml_text(text, "job.yml")[0]


# --------------------------------------------------------------------------- YAML 1.2 scalars
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # YAML 1.1 booleans that YAML 1.2 keeps as strings (the "Norway problem")
        ("NO", "NO"),
        ("no", "no"),
        ("No", "No"),
        ("yes", "yes"),
        ("Yes", "Yes"),
        ("on", "on"),
        ("off", "off"),
        ("y", "y"),
        ("n", "n"),
        # the real booleans
        ("true", True),
        ("True", True),
        ("TRUE", True),
        ("false", False),
        ("FALSE", False),
        # nulls
        ("~", None),
        ("null", None),
        ("Null", None),
        ("NULL", None),
        # integers: 010 is decimal ten in YAML 1.2, not octal eight
        ("010", 10),
        ("42", 42),
        ("-7", -7),
        ("+12", 12),
        ("0x1F", 31),
        # YAML 1.1 only forms stay strings
        ("1_000", "1_000"),
        ("0b101", "0b101"),
        ("1:30", "1:30"),
        # floats
        ("0.5", 0.5),
        (".5", 0.5),
        ("-2.5", -2.5),
        ("1.5e+3", 1500.0),
        (".inf", math.inf),
        ("-.inf", -math.inf),
        # "1e999" is a typo, not infinity
        ("1e999", "1e999"),
        # timestamps are not converted
        ("2024-01-01", "2024-01-01"),
        ("2024-01-01T10:00:00Z", "2024-01-01T10:00:00Z"),
        ("hello world", "hello world"),
    ],
)
def test_plain_scalars_follow_yaml_1_2(text: str, expected: object) -> None:
    assert load(f"v: {text}\n") == {"v": expected}
    assert type(load(f"v: {text}\n")["v"]) is type(expected)  # type: ignore[index]


@pytest.mark.parametrize(("text", "expected"), [("1e-3", 0.001), ("1e3", 1000.0), ("1.5e3", 1500.0), ("0o17", 15)])
def test_yaml_1_2_numbers_that_yaml_1_1_does_not_know(text: str, expected: object) -> None:
    assert load(f"v: {text}\n") == {"v": expected}


def test_nan() -> None:
    value = load("v: .nan\n")["v"]  # type: ignore[index]
    assert isinstance(value, float) and math.isnan(value)


@pytest.mark.parametrize("text", ['"24"', "'24'", '"true"', "'NO'", "!!str 5", '""'])
def test_quoted_and_tagged_strings_stay_strings(text: str) -> None:
    value = load(f"v: {text}\n")["v"]  # type: ignore[index]
    assert isinstance(value, str)


def test_empty_plain_value_is_null() -> None:
    assert load("v:\n") == {"v": None}


def test_block_scalars_keep_text() -> None:
    data = load("a: |\n  one\n  two\nb: >-\n  folded\n  line\n")
    assert data == {"a": "one\ntwo\n", "b": "folded line"}


def test_resolve_plain_directly() -> None:
    assert resolve_plain("24") == 24
    assert resolve_plain("[a, b]") == "[a, b]"
    with pytest.raises(ValueError, match="too large"):
        resolve_plain("9" * 100)


# --------------------------------------------------------------------------- structure
def test_nested_structures_and_empty_document() -> None:
    assert load("a: {b: [1, 2, {c: d}]}\n") == {"a": {"b": [1, 2, {"c": "d"}]}}
    assert load("") is None
    assert load("# only a comment\n") is None
    assert load("- 1\n- 2\n") == [1, 2]


def test_merge_keys_are_expanded_and_explicit_keys_win() -> None:
    data = load("base: &b {x: 1, y: 2}\njob:\n  <<: *b\n  y: 3\n")
    assert data["job"] == {"x": 1, "y": 3}  # type: ignore[index]


def test_aliases_are_copied_values() -> None:
    data = load("a: &x [1, 2]\nb: *x\n")
    assert data == {"a": [1, 2], "b": [1, 2]}


def test_bom_is_accepted(tmp_path: Path) -> None:
    p = tmp_path / "bom.yml"
    p.write_bytes(b"\xef\xbb\xbfcommand: echo hi\n")
    assert load_yaml_file(p)[0] == {"command": "echo hi"}


# --------------------------------------------------------------------------- locations
def test_source_map_lines_and_columns() -> None:
    text = "command: echo hi\ninputs:\n  lr: 0.1\n  data:\n    path: ./x\n"
    _, smap = load_yaml_text(text, "job.yml")
    assert smap.values[("command",)] == (1, 10)
    assert smap.keys[("inputs", "lr")] == (3, 3)
    assert smap.values[("inputs", "lr")] == (3, 7)
    assert smap.values[("inputs", "data", "path")] == (5, 11)
    assert str(smap.locate(("inputs", "data", "path"))) == "job.yml:5:11"
    assert str(smap.locate(("inputs", "lr"), key=True)) == "job.yml:3:3"
    # a path that does not exist falls back to its nearest ancestor
    assert str(smap.locate(("inputs", "data", "mode"))) == "job.yml:5:5"
    assert str(smap.locate(("nothing", "here"))) == "job.yml:1:1"


def test_find_text_points_at_the_line_of_an_expression() -> None:
    text = "command: |\n  echo one\n  echo ${{inputs.x}}\n"
    _, smap = load_yaml_text(text, "job.yml")
    loc = smap.find_text(("command",), "${{inputs.x}}")
    assert (loc.line, loc.col) == (3, 8)


def test_overrides_are_reported_as_set_flags() -> None:
    _, smap = load_yaml_text("a: 1\n", "job.yml")
    smap.overrides[("a",)] = "a=2"
    assert str(smap.locate(("a",))) == "--set a=2"


def test_sub_reroots_a_source_map() -> None:
    _, smap = load_yaml_text("jobs:\n  a:\n    command: x\n", "p.yml")
    sub = smap.sub(("jobs", "a"))
    assert isinstance(sub, SourceMap)
    assert sub.values[("command",)] == (3, 14)


def test_dotted_and_walk() -> None:
    assert dotted(("inputs", "lr")) == "inputs.lr"
    assert dotted(("jobs", "a", "inputs", 3)) == "jobs.a.inputs[3]"
    assert dotted(()) == ""
    paths = [p for p, _ in walk({"a": [1, {"b": 2}]})]
    assert paths == [(), ("a",), ("a", 0), ("a", 1), ("a", 1, "b")]


# --------------------------------------------------------------------------- refusals
def err(text: str) -> ValidationError:
    with pytest.raises(ValidationError) as info:
        load_yaml_text(text, "job.yml")
    return info.value


def test_duplicate_key_is_an_error_with_both_lines() -> None:
    e = err("a: 1\nb: 2\na: 3\n")
    assert "duplicate key 'a'" in e.message
    assert "line 1" in e.message
    assert e.location is not None and e.location.line == 3
    assert e.field == "a"


def test_duplicate_nested_key() -> None:
    e = err("x:\n  y: 1\n  y: 2\n")
    assert e.field == "x.y" and e.location is not None and e.location.line == 3


def test_alias_bomb_is_refused_quickly() -> None:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]")
    e = err("\n".join(lines) + "\n")
    assert "alias" in (e.hint or "") and "too large" in e.message


def test_many_nodes_without_aliases_are_also_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(yamlload, "MAX_NODES", 50)
    e = err("v: [" + ", ".join(["1"] * 100) + "]\n")
    assert "more than 50 nodes" in e.message


def test_huge_scalar_is_refused() -> None:
    e = err("v: " + "x" * (yamlload.MAX_SCALAR_CHARS + 1) + "\n")
    assert "longer than" in e.message and e.field == "v"


def test_huge_integer_is_refused() -> None:
    e = err("n: " + "9" * 60 + "\n")
    assert "too large" in e.message and e.field == "n"


def test_deep_nesting_is_refused() -> None:
    e = err("v: " + "[" * 100 + "]" * 100 + "\n")
    assert "nesting deeper" in e.message


def test_raw_nul_is_refused() -> None:
    e = err("v: a\x00b\n")
    assert "NUL" in e.message


def test_invalid_yaml_has_a_location() -> None:
    e = err("a: 1\n\tb: 2\n")
    assert e.message.startswith("invalid YAML")
    assert e.location is not None and e.location.line == 2


def test_unknown_application_tag_is_refused() -> None:
    e = err("v: !custom thing\n")
    assert "unsupported YAML tag" in e.message


def test_python_tags_are_refused() -> None:
    e = err("v: !!python/object:os.system echo\n")
    assert "unsupported YAML tag" in e.message


def test_non_scalar_keys_are_refused() -> None:
    e = err("? [a, b]\n: 1\n")
    assert "keys must be plain strings" in e.message


def test_merge_of_a_scalar_is_refused() -> None:
    e = err("a: &x 1\nb:\n  <<: *x\n")
    assert "merge key" in e.message


def test_file_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValidationError, match="file not found"):
        load_yaml_file(tmp_path / "missing.yml")
    with pytest.raises(ValidationError, match="is a directory"):
        load_yaml_file(tmp_path)
    big = tmp_path / "big.yml"
    big.write_text("a: 1\n" * 100)
    monkeypatch.setattr(yamlload, "MAX_FILE_BYTES", 100)
    with pytest.raises(ValidationError, match="refused"):
        load_yaml_file(big)
    bad = tmp_path / "latin1.yml"
    bad.write_bytes(b"a: caf\xe9\n")
    with pytest.raises(ValidationError, match="not valid UTF-8"):
        load_yaml_file(bad)
