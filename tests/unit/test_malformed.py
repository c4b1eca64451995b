"""Every malformed job file in ``tests/malformed/`` through the real CLI: exit 2, ``FILE:LINE``, no traceback.

Each ``tests/malformed/*.yml`` starts with header comments::

    # expect: <a substring of the error message>      (first line, required)
    # field: <the dotted field the error names>       (optional)
    # line: <the line the error must point at>        (optional)
    # at: <basename of the file the error is in>      (optional; default: the job file itself)

Helper files (components, environment files the cases reference) live in
``tests/malformed/_parts/`` and are not cases themselves.  Adding a ``.yml`` file adds a
test.  A few cases are generated at test time because they cannot sensibly live in git
(a 2 MB scalar, raw NUL and invalid UTF-8 bytes).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
CORPUS = HERE.parent / "malformed"
HEADER = re.compile(r"^# (expect|field|line|at): ?(.*)$")

#: cases that fail because of a bug in non-test code (kept visible, strict)
KNOWN_BUGS: dict[str, str] = {}


@dataclass
class Case:
    path: Path
    expect: str
    field: str | None = None
    line: int | None = None
    at: str | None = None


def parse_case(path: Path) -> Case:
    raw = path.read_bytes()
    head = raw.split(b"\n", 8)[:8]
    fields: dict[str, str] = {}
    for i, line in enumerate(head):
        m = HEADER.match(line.decode("utf-8", "replace").rstrip("\r"))
        if not m:
            if i == 0:
                raise AssertionError(f"{path.name}: the first line must be '# expect: <substring>'")
            break
        fields[m.group(1)] = m.group(2).strip()
    assert fields.get("expect"), f"{path.name}: '# expect:' must not be empty"
    return Case(
        path=path,
        expect=fields["expect"],
        field=fields.get("field") or None,
        line=int(fields["line"]) if "line" in fields else None,
        at=fields.get("at") or None,
    )


# --------------------------------------------------------------------------- generated cases
def _huge_scalar() -> bytes:
    return b"# expect: longer than\n# field: command\n# line: 4\ncommand: echo " + b"x" * (2 * 1024 * 1024) + b"\n"


def _nul_byte() -> bytes:
    return b"# expect: NUL\n# line: 3\ncommand: echo a\x00b\n"


def _invalid_utf8() -> bytes:
    return b"# expect: not valid UTF-8\n# line: 3\ncommand: echo caf\xe9\n"


GENERATED: dict[str, Callable[[], bytes]] = {
    "huge-scalar.yml": _huge_scalar,
    "nul-byte.yml": _nul_byte,
    "invalid-utf8.yml": _invalid_utf8,
}


def _param(id_: str, value: object) -> object:
    key = id_ if id_ in KNOWN_BUGS else None
    marks = [pytest.mark.xfail(reason=KNOWN_BUGS[key], strict=True)] if key else []
    return pytest.param(value, id=id_, marks=marks)


CASE_FILES = sorted(CORPUS.glob("*.yml"))


def test_corpus_is_big_enough() -> None:
    assert len(CASE_FILES) >= 60, f"only {len(CASE_FILES)} malformed files in {CORPUS}"


def test_every_case_has_a_header() -> None:
    for path in CASE_FILES:
        parse_case(path)


REPO = CORPUS.parent.parent


#: cases also run through the installed console script, to show the forked runs are the same
CONSOLE_SCRIPT_SAMPLE = ("undeclared-input.yml", "unknown-key-resources.yml", "alias-bomb.yml", "tab-indent.yml")


@pytest.fixture(scope="module")
def validate_all(forked_cli: Callable[..., Any], tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Any]:
    """``hpcjobs job validate -f FILE`` for every case, run once per module.

    Each run is a separate process executing the CLI's entry point (see ``forked_cli``
    in tests/conftest.py); a CLI start costs about a second of imports, which a hundred
    files would pay in a row.  ``test_console_script_matches_forked_runs`` checks a
    sample against the real ``hpcjobs`` console script.
    """
    home = tmp_path_factory.mktemp("malformed-home")
    gen_dir = tmp_path_factory.mktemp("malformed-generated")
    shown: dict[str, str] = {p.name: str(p.relative_to(REPO)) for p in CASE_FILES}
    for name, make in GENERATED.items():
        (gen_dir / name).write_bytes(make())
        shown[f"generated:{name}"] = str(gen_dir / name)
    keys = list(shown)
    results = forked_cli([["job", "validate", "-f", shown[k]] for k in keys], home=home, cwd=REPO)
    by_key = dict(zip(keys, results, strict=True))

    def result(key: str) -> Any:
        return shown[key], by_key[key]

    return result


def test_console_script_matches_forked_runs(
    validate_all: Callable[[str], Any], cli_runner: Callable[..., Any], tmp_path: Path
) -> None:
    for name in CONSOLE_SCRIPT_SAMPLE:
        shown, forked = validate_all(name)
        real = cli_runner("job", "validate", "-f", shown, home=tmp_path, cwd=REPO)
        assert (real.returncode, real.stderr, real.stdout) == (forked.returncode, forked.stderr, forked.stdout)


def test_job_create_reports_like_validate(
    validate_all: Callable[[str], Any], cli_runner: Callable[..., Any], tmp_path: Path
) -> None:
    """``job create`` (run without typer, hpcjobs/cli/fast.py) fails with validate's message and exit 2."""
    for name in CONSOLE_SCRIPT_SAMPLE:
        shown, forked = validate_all(name)
        created = cli_runner("job", "create", "-f", shown, home=tmp_path, cwd=REPO)
        assert (created.returncode, created.stderr, created.stdout) == (2, forked.stderr, "")


def check(case: Case, shown: str, res: Any) -> None:
    err = res.stderr
    out = res.stdout
    context = f"\n--- stderr ---\n{err}\n--- stdout ---\n{out[:2000]}"
    assert "Traceback" not in err + out, context
    assert "error: unexpected " not in err, context
    assert res.returncode == 2, f"exit code {res.returncode}" + context
    where = case.at or Path(shown).name
    located = re.search(re.escape(where) + r":(\d+)", err)
    assert located, f"no {where}:LINE in the error" + context
    if case.line is not None:
        assert int(located.group(1)) == case.line, f"error points at line {located.group(1)}, expected {case.line}" + context
    assert case.expect in err, f"{case.expect!r} not in the error" + context
    if case.field:
        assert f"{case.field}:" in err, f"field {case.field!r} not named" + context
    assert err.count("\n") < 40, "the error is a dump, not one precise message" + context


@pytest.mark.parametrize("path", [_param(p.name, p) for p in CASE_FILES])
def test_malformed_file(path: Path, validate_all: Callable[[str], Any]) -> None:
    shown, res = validate_all(path.name)
    check(parse_case(path), shown, res)


@pytest.mark.parametrize("name", [_param(f"generated:{n}", n) for n in GENERATED])
def test_generated_malformed_file(name: str, validate_all: Callable[[str], Any]) -> None:
    shown, res = validate_all(f"generated:{name}")
    check(parse_case(Path(shown)), shown, res)
