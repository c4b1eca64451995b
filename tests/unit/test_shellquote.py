"""Tests for hpcjobs.shellquote, including real bash round trips."""

from __future__ import annotations

import importlib.util
import os
import subprocess
from pathlib import Path

import pytest

from hpcjobs.errors import ValidationError
from hpcjobs.shellquote import (
    FORBIDDEN_ENV_NAMES,
    check_directive_value,
    shq,
    shq_env_name,
)

HAVE_HYPOTHESIS = importlib.util.find_spec("hypothesis") is not None

# Values chosen to break naive quoting: each one would run a command, split into
# several words, glob, expand, or inject a script line if mishandled.
HOSTILE: list[str] = [
    "",
    "plain",
    "-rf",
    "--",
    "-n",
    "-e",
    "it's",
    "'",
    "''",
    '"',
    'say "hi"',
    "'\"'\"",
    "$(touch canary)",
    "`touch canary`",
    "'; touch canary; '",
    '"; touch canary; "',
    "; rm -rf canary_dir",
    "a && touch canary",
    "a | touch canary",
    "a[$(touch canary)]",
    "${IFS}",
    "$HOME",
    "$$",
    "$'x'",
    '$"x"',
    "\\",
    "\\\\",
    "\\n",
    "\\'",
    "a\\",
    "x\n#SBATCH --partition=evil",
    "line1\nline2",
    "abc\n",
    "\n",
    "cr\rhere",
    "crlf\r\n",
    "tab\there",
    "%j %x %%",
    "%s%n",
    "*",
    "?",
    "[a-z]*",
    "~",
    "~root",
    "a=~",
    "{a,b}",
    "{1..3}",
    "!",
    "!!",
    "#not a comment",
    "a b  c",
    "  lead and trail  ",
    "héllo wörld",
    "日本語",
    "emoji 🚀👩\u200d🔬",
    "rtl \u202eexe.txt",
    "\x1b[31mred\x1b[0m",
    "\x1b",
    "\x7f",
    "\x01\x02\x1f",
    "\x0ab",  # \x0a followed by a hex digit
    "\x0aBEEF",
    "\u0085next line",
    "\u2028sep",
    "\u00a0nbsp",
    "\nEOF\n",
    "EOF",
    "x" * 100_000,
    "ab'c\n" * 2000,
]

_WRITE_ARGS = '#!/bin/sh\nprintf \'%s\\0\' "$#" "$@" >> "$ARGV_OUT"\n'


def _bash_env(tmp: Path, locale: str) -> tuple[dict[str, str], Path, Path]:
    bindir = tmp / "bin"
    bindir.mkdir(exist_ok=True)
    prog = bindir / "P"
    prog.write_text(_WRITE_ARGS)
    prog.chmod(0o755)
    work = tmp / "work"
    work.mkdir(exist_ok=True)
    out = tmp / "argv.out"
    env = {
        "PATH": f"{bindir}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "LC_ALL": locale,
        "ARGV_OUT": str(out),
    }
    return env, work, out


def _decode(raw: bytes) -> list[list[bytes]]:
    """Records written by P: count, then that many NUL-terminated arguments."""
    items = raw.split(b"\0")
    assert items[-1] == b""
    items.pop()
    records: list[list[bytes]] = []
    while items:
        count = int(items.pop(0))
        records.append(items[:count])
        del items[:count]
    return records


def run_bash(script: str, tmp: Path, locale: str = "C.UTF-8") -> tuple[list[list[bytes]], str]:
    """Run *script* with bash in an empty directory; return P's records and stderr.

    Asserts that nothing was created in that directory (no canary).
    """
    env, work, out = _bash_env(tmp, locale)
    if out.exists():
        out.unlink()
    proc = subprocess.run(
        ["bash", "-c", script],
        cwd=work,
        env=env,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert list(work.iterdir()) == [], "the script created files (a value was executed)"
    records = _decode(out.read_bytes()) if out.exists() else []
    return records, proc.stderr.decode("utf-8", "replace")


# -- shq: form --------------------------------------------------------------


@pytest.mark.parametrize("value", ["abc", "a-b_c.d/e:f=g@h%i+j,k", "-rf", "0", "x=1", "/abs/path"])
def test_plain_values_are_unchanged(value: str) -> None:
    assert shq(value) == value


def test_empty_is_two_single_quotes() -> None:
    assert shq("") == "''"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("a b", "'a b'"),
        ("it's", "'it'\\''s'"),
        ("$(x)", "'$(x)'"),
        ("~", "'~'"),
        ("*", "'*'"),
        ("日本", "'日本'"),
    ],
)
def test_single_quote_form(value: str, expected: str) -> None:
    assert shq(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("a\nb", "$'a\\x0ab'"),
        ("\r", "$'\\x0d'"),
        ("t\t'\\", "$'t\\x09\\'\\\\'"),
        ("\x1b[31m", "$'\\x1b[31m'"),
        ("\x7f", "$'\\x7f'"),
        ("\u202e", "$'\\xe2\\x80\\xae'"),
        ("é\n", "$'é\\x0a'"),
    ],
)
def test_ansi_c_form(value: str, expected: str) -> None:
    assert shq(value) == expected


@pytest.mark.parametrize("value", HOSTILE)
def test_output_is_one_line_without_raw_controls(value: str) -> None:
    quoted = shq(value)
    assert "\n" not in quoted
    assert "\r" not in quoted
    assert all(ch.isprintable() for ch in quoted)


def test_nul_is_refused() -> None:
    with pytest.raises(ValidationError, match="NUL"):
        shq("a\x00b")


def test_lone_surrogate_is_refused() -> None:
    with pytest.raises(ValidationError, match="surrogate"):
        shq("a\udc80b")


# -- shq: real bash round trips -----------------------------------------------


@pytest.mark.parametrize("value", HOSTILE, ids=range(len(HOSTILE)))
def test_shq_round_trip_as_argument(value: str, tmp_path: Path) -> None:
    records, err = run_bash(f"P {shq(value)}", tmp_path)
    assert records == [[value.encode()]], err


@pytest.mark.parametrize("value", HOSTILE, ids=range(len(HOSTILE)))
def test_shq_round_trip_through_export(value: str, tmp_path: Path) -> None:
    script = f'export V={shq(value)}\nP "$V"\nsh -c \'P "$V"\'\n'
    records, err = run_bash(script, tmp_path)
    assert records == [[value.encode()], [value.encode()]], err


@pytest.mark.parametrize("locale", ["C", "POSIX", "C.UTF-8"])
@pytest.mark.parametrize("value", ["\u202e\n日本", "é\x1b", "\x0ab\t🚀", 'it\'s "x"'])
def test_shq_round_trip_is_locale_independent(value: str, locale: str, tmp_path: Path) -> None:
    records, err = run_bash(f"P {shq(value)}", tmp_path, locale=locale)
    assert records == [[value.encode()]], err


def test_shq_value_cannot_add_a_script_line(tmp_path: Path) -> None:
    value = "x\n#SBATCH --partition=evil\ntouch canary"
    script = f'#!/bin/bash\n#SBATCH --job-name=ok\nexport V={shq(value)}\nP "$V"\n'
    assert script.count("\n") == 4
    assert [ln for ln in script.splitlines() if ln.startswith("#SBATCH")] == ["#SBATCH --job-name=ok"]
    records, err = run_bash(script, tmp_path)
    assert records == [[value.encode()]], err


if HAVE_HYPOTHESIS:  # optional; the property tests need it
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    @pytest.mark.slow
    @settings(
        max_examples=150,
        database=None,  # keep no example database in the checkout
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture],
    )
    @given(value=st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00")))
    def test_shq_round_trip_property(value: str, tmp_path: Path) -> None:
        records, err = run_bash(f"P {shq(value)}", tmp_path)
        assert records == [[value.encode()]], err


# -- shq_env_name ---------------------------------------------------------------


@pytest.mark.parametrize("name", ["X", "_x", "MY_VAR_2", "PATH", "LD_LIBRARY_PATH", "LD_PRELOAD", "OMP_NUM_THREADS"])
def test_env_name_ok(name: str) -> None:
    assert shq_env_name(name) == name


@pytest.mark.parametrize("name", ["", "1X", "A-B", "A B", "A=B", "Ä", "X\n", "$X", "a.b"])
def test_env_name_malformed(name: str) -> None:
    with pytest.raises(ValidationError, match="invalid environment variable name"):
        shq_env_name(name)


@pytest.mark.parametrize("name", sorted(FORBIDDEN_ENV_NAMES))
def test_env_name_forbidden(name: str) -> None:
    with pytest.raises(ValidationError, match=name):
        shq_env_name(name)


@pytest.mark.parametrize("name", ["BASH_FUNC_ls%%", "BASH_FUNC_x", "SLURM_JOB_ID", "SBATCH_PARTITION"])
def test_env_name_forbidden_prefix(name: str) -> None:
    with pytest.raises(ValidationError) as info:
        shq_env_name(name)
    if name.isidentifier():
        assert info.value.hint is not None
        assert "reserved" in info.value.hint


def test_env_name_is_case_sensitive() -> None:
    # "ifs" or "slurm_x" are ordinary variables to bash and Slurm.
    assert shq_env_name("ifs") == "ifs"
    assert shq_env_name("slurm_x") == "slurm_x"


# -- check_directive_value -----------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    ["gpu", "gpu:a100:2", "00:10:00", "1-00:00:00", "node[01-04]", "slurm-%j.out", "a,b", "x=y+z@w", "/p/a_b.c"],
)
def test_directive_value_ok(value: str) -> None:
    assert check_directive_value(value, "resources.partition") == value


@pytest.mark.parametrize(
    "value",
    ["", "a b", "a\nb", "a\n#SBATCH --x", "a'b", 'a"b', "a#b", "$X", "a;b", "a\tb", "a\rb", "é", "a`b`"],
)
def test_directive_value_rejected(value: str) -> None:
    with pytest.raises(ValidationError) as info:
        check_directive_value(value, "resources.partition")
    assert info.value.field == "resources.partition"
    assert "resources.partition" in str(info.value)
