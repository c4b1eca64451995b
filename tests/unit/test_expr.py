"""Tests for hpcjobs.expr, including real bash round trips of substituted commands."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from hpcjobs.errors import ValidationError
from hpcjobs.expr import (
    ExpressionError,
    Ref,
    find_refs,
    line_col,
    normalize_legacy,
    resolve_optional,
    substitute,
)
from hpcjobs.shellquote import shq

HAVE_HYPOTHESIS = importlib.util.find_spec("hypothesis") is not None


def var_for(ref: Ref) -> str:
    return "HPC_" + re.sub(r"\W", "_", ref.text)


def sub(command: str) -> str:
    return substitute(command, var_for)


# -- find_refs / line_col ---------------------------------------------------------


def test_find_refs_basic() -> None:
    cmd = "python t.py --lr ${{inputs.lr}} --out ${{ outputs.model }} --n ${{search_space.n}}"
    refs = find_refs(cmd)
    assert [(r.text, r.namespace, r.name) for r in refs] == [
        ("inputs.lr", "inputs", "lr"),
        ("outputs.model", "outputs", "model"),
        ("search_space.n", "search_space", "n"),
    ]
    for r in refs:
        assert cmd[r.start : r.end].startswith("${{")
        assert cmd[r.start : r.end].endswith("}}")
        assert not r.optional
    assert cmd[refs[1].start : refs[1].end] == "${{ outputs.model }}"


def test_find_refs_parent_name_and_groups() -> None:
    refs = find_refs("${{parent.jobs.train.outputs.model}} ${{name}} ${{inputs.grp.sub}} ${{parent.jobs.s-1.outputs.o}}")
    assert [(r.namespace, r.name) for r in refs] == [
        ("parent", "jobs.train.outputs.model"),
        ("name", ""),
        ("inputs", "grp.sub"),
        ("parent", "jobs.s-1.outputs.o"),
    ]


def test_find_refs_optional_flag() -> None:
    refs = find_refs("a ${{inputs.a}} $[[--b ${{inputs.b}} ${{inputs.c}}]] ${{inputs.d}}")
    assert [(r.name, r.optional) for r in refs] == [("a", False), ("b", True), ("c", True), ("d", False)]


def test_find_refs_none() -> None:
    assert find_refs("echo ${HOME} $x {a,b} '${' }}") == []


@pytest.mark.parametrize(
    ("command", "message"),
    [
        ("echo ${{inputs.x}", "no closing"),
        ("echo ${{inputs.x", "no closing"),
        ("echo ${{ }}", "malformed"),
        ("echo ${{inputs.a b}}", "malformed"),
        ("echo ${{inputs.$x}}", "malformed"),
        ("echo ${{1abc}}", "malformed"),
        ("echo ${{inputs.x\n}}", "no closing"),
    ],
)
def test_find_refs_malformed(command: str, message: str) -> None:
    with pytest.raises(ExpressionError, match=message) as info:
        find_refs(command)
    assert isinstance(info.value, ValidationError)
    assert info.value.field == "command"
    assert info.value.offset == command.index("${{")


def test_error_location_points_into_command() -> None:
    cmd = "echo ok\n  echo ${{bad thing}}"
    with pytest.raises(ExpressionError) as info:
        find_refs(cmd)
    assert (info.value.line, info.value.col) == (2, 8)
    assert "line 2, column 8" in str(info.value)


@pytest.mark.parametrize(
    ("text", "offset", "expected"),
    [("", 0, (1, 1)), ("abc", 2, (1, 3)), ("a\nbc", 2, (2, 1)), ("a\nbc", 4, (2, 3)), ("a\n\nb", 3, (3, 1)), ("ab", 99, (1, 3))],
)
def test_line_col(text: str, offset: int, expected: tuple[int, int]) -> None:
    assert line_col(text, offset) == expected


# -- normalize_legacy -------------------------------------------------------------


def test_single_braces_are_rewritten_with_a_warning() -> None:
    new, warnings = normalize_legacy("python t.py --b {inputs.b} --o { outputs.o } --s {search_space.lr}")
    assert new == "python t.py --b ${{inputs.b}} --o ${{outputs.o}} --s ${{search_space.lr}}"
    assert len(warnings) == 3
    assert all("deprecated" in w for w in warnings)


@pytest.mark.parametrize(
    "command",
    [
        "python t.py ${{inputs.b}} ${{ inputs.c }}",
        "echo ${inputs} ${HOME} {a,b} {1..3} {inputs.a,b}",
        "[ -f x ] && echo yes",
        "[ -f ${{inputs.x}} ] && echo yes",
        "echo ${arr[0]} ${arr[${{inputs.i}}]}",
        "if [[ -f ${{inputs.x}} ]]; then :; fi",
        "echo $[[--x ${{inputs.x}}]]",
        "echo [--x 1] [abc]",
        "echo x[--x ${{inputs.x}}]",
        "echo [--x ${{inputs.x}}]*",
        "echo [--x ${{outputs.o}}]",
        "{ echo {inputs.x,y}; }",
        "echo {{inputs.x}}",
    ],
)
def test_normalize_leaves_shell_constructs_alone(command: str) -> None:
    assert normalize_legacy(command) == (command, [])


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("python t.py [--x ${{inputs.x}}]", "python t.py $[[--x ${{inputs.x}}]]"),
        ("t [--a=${{inputs.a}}] [--b ${{ inputs.b }}];", "t $[[--a=${{inputs.a}}]] $[[--b ${{ inputs.b }}]];"),
        ("t [--x {inputs.x}]", "t $[[--x ${{inputs.x}}]]"),
        ("[--x ${{inputs.x}} --y ${{outputs.y}}]", "$[[--x ${{inputs.x}} --y ${{outputs.y}}]]"),
        ("t\n[--x ${{inputs.x}}]\n", "t\n$[[--x ${{inputs.x}}]]\n"),
    ],
)
def test_legacy_optional_brackets(command: str, expected: str) -> None:
    new, warnings = normalize_legacy(command)
    assert new == expected
    assert warnings
    assert any("$[[" in w for w in warnings)


# -- resolve_optional ----------------------------------------------------------------


def test_resolve_optional_keeps_and_drops() -> None:
    cmd = "t $[[--a ${{inputs.a}}]] $[[--b ${{inputs.b}}]] $[[--both ${{inputs.a}} ${{inputs.b}}]] $[[--lit]]"
    assert resolve_optional(cmd, lambda n: n == "a") == "t --a ${{inputs.a}}  --both ${{inputs.a}} ${{inputs.b}} --lit"
    assert resolve_optional(cmd, lambda n: False) == "t    --lit"
    assert resolve_optional(cmd, lambda n: True) == (
        "t --a ${{inputs.a}} --b ${{inputs.b}} --both ${{inputs.a}} ${{inputs.b}} --lit"
    )


def test_resolve_optional_only_inputs_count() -> None:
    cmd = "t $[[--o ${{outputs.o}}]] $[[--x ${{inputs.x}} --o ${{outputs.o}}]]"
    assert resolve_optional(cmd, lambda n: False) == "t --o ${{outputs.o}} "


def test_resolve_optional_passes_group_names() -> None:
    seen: list[str] = []

    def keep(name: str) -> bool:
        seen.append(name)
        return True

    assert resolve_optional("$[[${{inputs.g.k}}]]", keep) == "${{inputs.g.k}}"
    assert seen == ["g.k"]


def test_resolve_optional_without_segments() -> None:
    assert resolve_optional("echo [[ x ]] ]]", lambda n: False) == "echo [[ x ]] ]]"


@pytest.mark.parametrize(
    ("command", "message", "offset"),
    [
        ("t $[[--a $[[--b ${{inputs.b}}]] ]]", "nested", 9),
        ("t $[[--a ${{inputs.a}}", "no closing", 2),
        ("t\n  $[[--a ${{inputs.a}}] ", "no closing", 4),
    ],
)
def test_resolve_optional_errors(command: str, message: str, offset: int) -> None:
    with pytest.raises(ExpressionError, match=message) as info:
        resolve_optional(command, lambda n: True)
    assert info.value.offset == offset


def test_full_pipeline() -> None:
    cmd, warnings = normalize_legacy("python t.py --lr {inputs.lr} [--e ${{inputs.epochs}}] $[[--s ${{inputs.seed}}]]")
    assert len(warnings) == 2
    assert {r.name for r in find_refs(cmd)} == {"lr", "epochs", "seed"}
    cmd = resolve_optional(cmd, lambda n: n == "seed")
    assert sub(cmd) == 'python t.py --lr "${HPC_inputs_lr}"  --s "${HPC_inputs_seed}"'


# -- substitute: emitted text ------------------------------------------------------------

V = "${HPC_inputs_x}"
G = "${HPC_inputs_x/*[!0123456789+-]*/@inputs.x_is_not_an_integer@}"


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("t ${{inputs.x}}", f't "{V}"'),
        ("t --x=${{ inputs.x }}", f't --x="{V}"'),
        ('t "a ${{inputs.x}}"', f't "a {V}"'),
        ("t 'a ${{inputs.x}} b'", f"t 'a '\"{V}\"' b'"),
        ("t $'a\\n${{inputs.x}}'", f"t $'a\\n'\"{V}\"$''"),
        ('t "$(p ${{inputs.x}} "${{inputs.x}}")"', f't "$(p "{V}" "{V}")"'),
        ("t `p ${{inputs.x}}`", f't `p "{V}"`'),
        ('t "`p ${{inputs.x}}`"', f't "`p "{V}"`"'),
        ("t # ${{inputs.x}} it's", f't # "{V}" it\'s'),
        ("cat <<EOF\n${{inputs.x}}\nEOF\nt ${{inputs.x}}", f'cat <<EOF\n{V}\nEOF\nt "{V}"'),
        ("t $(( ${{inputs.x}} + 1 ))", f't $(( "{G}" + 1 ))'),
        ("(( ${{inputs.x}} > 1 ))", f'(( "{G}" > 1 ))'),
        ("t $[ ${{inputs.x}} ]", f't $[ "{G}" ]'),
        ("[[ ${{inputs.x}} -gt 1 ]]", f'[[ "{G}" -gt 1 ]]'),
        ("[[ 1 -lt ${{inputs.x}} ]]", f'[[ 1 -lt "{G}" ]]'),
        ("[[ ${{inputs.x}} == a ]]", f'[[ "{V}" == a ]]'),
        ("t ${a[${{inputs.x}}]} ${s:${{inputs.x}}:1}", f't ${{a["{G}"]}} ${{s:"{G}":1}}'),
        ('t "${u:-${{inputs.x}}}" ${s#${{inputs.x}}}', f't "${{u:-"{V}"}}" ${{s#"{V}"}}'),
        ('t \\${{inputs.x}} "\\${{inputs.x}}"', f't "{V}" "{V}"'),
        ("t '\\${{inputs.x}}' $'\\${{inputs.x}}'", f"t '\\'\"{V}\"'' $'\\\\'\"{V}\"$''"),
        ('t $${{inputs.x}} "$${{inputs.x}}"', f't \\$"{V}" "\\${V}"'),
        ("t $(case ${{inputs.x}} in a) p ${{inputs.x}};; esac)", f't $(case "{V}" in a) p "{V}";; esac)'),
        ("echo no expressions 'here' \"$x\"", "echo no expressions 'here' \"$x\""),
    ],
)
def test_substitute_text(command: str, expected: str) -> None:
    assert sub(command) == expected


def test_quoted_heredoc_is_an_error() -> None:
    for delim in ("'EOF'", '"EOF"', "\\EOF", "E'O'F"):
        cmd = f"cat <<{delim}\nline\n${{{{inputs.x}}}}\nEOF\n"
        with pytest.raises(ExpressionError, match="quoted here-document") as info:
            sub(cmd)
        assert info.value.line == 3


def test_quoted_heredoc_without_expression_is_fine() -> None:
    cmd = "cat <<'EOF'\n$x `y`\nEOF\nt ${{inputs.x}}"
    assert sub(cmd) == f"cat <<'EOF'\n$x `y`\nEOF\nt \"{V}\""


def test_expression_as_heredoc_delimiter_is_an_error() -> None:
    with pytest.raises(ExpressionError, match="delimiter"):
        sub("cat <<${{inputs.x}}\nx\n")


def test_unresolved_optional_segment_is_refused() -> None:
    with pytest.raises(ValueError, match="resolve optional"):
        sub("t $[[--x ${{inputs.x}}]]")


@pytest.mark.parametrize("bad", ["", "1x", "a-b", "a b", "x}"])
def test_bad_variable_name_is_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="not a shell variable name"):
        substitute("t ${{inputs.x}}", lambda r: bad)


def test_var_for_sees_each_ref() -> None:
    seen: list[Ref] = []

    def record(ref: Ref) -> str:
        seen.append(ref)
        return "V"

    cmd = "t ${{inputs.a}} '${{outputs.b}}' ${{name}}"
    substitute(cmd, record)
    assert [r.text for r in seen] == ["inputs.a", "outputs.b", "name"]
    assert seen == find_refs(cmd)


# -- substitute: real bash round trips ----------------------------------------------------

HOSTILE: list[str] = [
    "",
    "plain",
    "-rf",
    "-n",
    "it's",
    '"',
    "'\"'\"",
    "$(touch canary)",
    "`touch canary`",
    "'; touch canary; '",
    '"; touch canary; "',
    ") ; touch canary ; (",
    "a[$(touch canary)]",
    "}; touch canary; {",
    ";rm -rf canary_dir",
    "${IFS}$HOME",
    "$$",
    "\\",
    "a\\",
    "\\'",
    "x\n#SBATCH --partition=evil",
    "line1\nline2",
    "abc\n",
    "cr\rhere",
    "crlf\r\n",
    "tab\there",
    "%j %x %%",
    "*",
    "?",
    "[a-z]*",
    "~",
    "~root/x",
    "{a,b}",
    "!!",
    "#hash",
    "a b  c",
    "  lead  ",
    "héllo",
    "emoji 🚀👩\u200d🔬",
    "rtl \u202eexe.txt",
    "\x1b[31mred\x1b[0m",
    "\x7f\x01",
    "\x0ab",
    "\nEOF\n",
    "EOF",
    "A\nB\n",
    "${{inputs.x}}",
    "$[[--x ${{inputs.x}}]]",
    "x" * 100_000,
]

X = "@X@"  # placeholder for ${{inputs.x}} in the templates below

Expect = Callable[[str], list[list[str]]]

CONTEXTS: dict[str, tuple[str, Expect]] = {
    "unquoted": (f"P {X}", lambda v: [[v]]),
    "twice": (f"P {X} {X}", lambda v: [[v, v]]),
    "embedded": (f"P --lr={X}", lambda v: [["--lr=" + v]]),
    "affixes": (f"P a{X}b", lambda v: [["a" + v + "b"]]),
    "spaces_in_braces": ("P ${{ inputs.x }}", lambda v: [[v]]),
    "dquote": (f'P "a {X} b"', lambda v: [["a " + v + " b"]]),
    "dquote_multiline": (f'P "l1\n{X}\nl3"', lambda v: [["l1\n" + v + "\nl3"]]),
    "squote": (f"P 'a {X} b'", lambda v: [["a " + v + " b"]]),
    "ansic": (f"P $'a\\t{X}\\tb'", lambda v: [["a\t" + v + "\tb"]]),
    "mixed_quotes": (f"P 'q{X}'\"d{X}\"$'a{X}'u{X}", lambda v: [["q" + v + "d" + v + "a" + v + "u" + v]]),
    "cmdsub_in_dquote": (f'P "$(printf %s. {X})"', lambda v: [[v + "."]]),
    "dquote_in_cmdsub_in_dquote": (f'P "<$(printf %s. "{X}")>"', lambda v: [["<" + v + ".>"]]),
    "squote_in_cmdsub": (f"P \"$(printf %s. 'a {X}')\"", lambda v: [["a " + v + "."]]),
    "program_in_cmdsub": (f': "$(P {X})"', lambda v: [[v]]),
    "nested_cmdsub": (f': $(: $(P "in {X}" {X}))', lambda v: [["in " + v, v]]),
    "backticks": (f": `P {X}`", lambda v: [[v]]),
    "backticks_in_dquote": (f': "`P {X}`"', lambda v: [[v]]),
    "dquote_in_backticks_in_dquote": (f': "`P "q {X}"`"', lambda v: [["q " + v]]),
    "process_substitution": (f"cat <(P {X}) >/dev/null", lambda v: [[v]]),
    "param_default": (f"P ${{UNSET_VAR:-{X}}}", lambda v: [[v]]),
    "param_default_dquote": (f'P "${{UNSET_VAR:-{X}}}"', lambda v: [[v]]),
    "param_default_nested_dquote": (f'P "${{UNSET_VAR:-"{X}"}}"', lambda v: [[v]]),
    "param_alternative": (f'S=1; P "${{S:+{X}}}"', lambda v: [[v]]),
    "param_pattern_is_literal": (f'S={X}tail; P "${{S#{X}}}" ${{S#{X}}}', lambda v: [["tail", "tail"]]),
    "comment": (f"P {X} # trailing {X} it's", lambda v: [[v]]),
    "heredoc": (f"PIN a <<EOF\npre {X} post\nEOF", lambda v: [["a", "pre " + v + " post\n"]]),
    "heredoc_dash": (f"PIN <<-EOF\n\t{X}\n\tEOF\nP done", lambda v: [[v + "\n"], ["done"]]),
    "heredoc_quotes_literal": (f"PIN <<EOF\n\"{X}\" '{X}'\nEOF", lambda v: [['"' + v + "\" '" + v + "'\n"]]),
    "heredoc_then_command": (f"PIN <<EOF\n{X}\nEOF\nP {X}", lambda v: [[v + "\n"], [v]]),
    "heredoc_argument_same_line": (f"PIN {X} <<EOF | cat\n{X}\nEOF", lambda v: [[v, v + "\n"]]),
    "herestring": (f"PIN <<< {X}", lambda v: [[v + "\n"]]),
    "two_heredocs": (f"PIN 3<<A <<B\n{X}\nA\n{X}\nB", lambda v: [[v + "\n"]]),
    "heredoc_in_cmdsub": (f'P "$(cat <<EOF\n{X}.\nEOF\n)"', lambda v: [[v + "."]]),
    "backslash_unquoted": (f"P \\{X}", lambda v: [[v]]),
    "backslash_dquote": (f'P "\\{X}"', lambda v: [[v]]),
    "backslash_squote": (f"P '\\{X}'", lambda v: [["\\" + v]]),
    "backslash_ansic": (f"P $'\\{X}'", lambda v: [["\\" + v]]),
    "dollar_before": (f'P ${X} "${X}"', lambda v: [["$" + v, "$" + v]]),
    "case": (f"case {X} in {X}) P {X};; esac", lambda v: [[v]]),
    "case_in_cmdsub": (f'P "$(case {X} in {X}) printf %s. {X};; esac)"', lambda v: [[v + "."]]),
    "dbracket_string_test": (f'if [[ {X} == "{X}" && -n {X}z ]]; then P yes; fi', lambda v: [["yes"]]),
    "for_loop": (f'for a in {X}; do P "$a"; done', lambda v: [[v]]),
    "assignment": (f'Y={X}; P "$Y"', lambda v: [[v]]),
    "export_to_child": (f"export Y={X}; sh -c 'P \"$Y\"'", lambda v: [[v]]),
    "array": (f'arr=({X} b); P "${{arr[@]}}"', lambda v: [[v, "b"]]),
    "subshell_and_group": (f"(P {X}); {{ P {X}; }}", lambda v: [[v], [v]]),
    "pipeline_and_list": (f"P {X} | cat; P {X} && :", lambda v: [[v], [v]]),
}

_P = '#!/bin/sh\nprintf \'%s\\0\' "$#" "$@" >> "$ARGV_OUT"\n'
# PIN records its arguments followed by its stdin as one more item.
_PIN = '#!/bin/sh\n{ printf \'%s\\0\' "$(($# + 1))" "$@"; cat; printf \'\\0\'; } >> "$ARGV_OUT"\n'


def _decode(raw: bytes) -> list[list[bytes]]:
    items = raw.split(b"\0")
    assert items[-1] == b""
    items.pop()
    records: list[list[bytes]] = []
    while items:
        count = int(items.pop(0))
        records.append(items[:count])
        del items[:count]
    return records


def run_bash(script: str, tmp: Path) -> tuple[list[list[bytes]], int, str, list[str]]:
    """Run *script* with bash in an empty directory.

    Returns the records written by P/PIN, the exit status, stderr, and the names
    of files the script created in that directory (a canary means code ran).
    """
    bindir = tmp / "bin"
    if not bindir.exists():
        bindir.mkdir()
        for name, text in (("P", _P), ("PIN", _PIN)):
            (bindir / name).write_text(text)
            (bindir / name).chmod(0o755)
    work = tmp / "work"
    work.mkdir(exist_ok=True)
    for leftover in work.iterdir():
        leftover.unlink()
    out = tmp / "argv.out"
    out.unlink(missing_ok=True)
    env = {"PATH": f"{bindir}:{os.environ.get('PATH', '/usr/bin:/bin')}", "LC_ALL": "C.UTF-8", "ARGV_OUT": str(out)}
    proc = subprocess.run(["bash", "-c", script], cwd=work, env=env, capture_output=True, timeout=60, check=False)
    records = _decode(out.read_bytes()) if out.exists() else []
    created = sorted(p.name for p in work.iterdir())
    return records, proc.returncode, proc.stderr.decode("utf-8", "replace"), created


def render(template: str, value: str) -> str:
    """The script a job would run: the exported value, then the substituted command."""
    command = template.replace(X, "${{inputs.x}}")
    return f"export HPC_inputs_x={shq(value)}\n{sub(command)}\n"


def check(template: str, expect: Expect, value: str, tmp: Path) -> None:
    script = render(template, value)
    records, rc, err, created = run_bash(script, tmp)
    assert created == [], f"code in the value ran: {created}"
    wanted = [[a.encode() for a in rec] for rec in expect(value)]
    assert records == wanted, f"rc={rc} stderr={err[:500]}\nscript={script[:500]!r}"


_MAX_ARG = 128 * 1024  # Linux MAX_ARG_STRLEN: longer single arguments fail with E2BIG


def _applicable(context: str, value: str) -> bool:
    """Leave out combinations that hit OS or bash limits rather than quoting."""
    _, expect = CONTEXTS[context]
    if any(len(a.encode()) >= _MAX_ARG for rec in expect(value) for a in rec):
        return False
    # bash matches ${S#pattern} in quadratic time; 100 kB patterns take minutes.
    return not (context == "param_pattern_is_literal" and len(value) > 10_000)


@pytest.mark.parametrize("value", HOSTILE, ids=range(len(HOSTILE)))
def test_round_trip(value: str, tmp_path: Path) -> None:
    """Every context for one value, in one bash run (each in a { } group, after a marker)."""
    contexts = [c for c in sorted(CONTEXTS) if _applicable(c, value)]
    body = "".join(f"P __context__ {c}\n{{\n{sub(CONTEXTS[c][0].replace(X, '${{inputs.x}}'))}\n}}\n" for c in contexts)
    script = f"export HPC_inputs_x={shq(value)}\n{body}"
    records, _, _, created = run_bash(script, tmp_path)
    got: dict[str, list[list[bytes]]] = {}
    current = ""
    for rec in records:
        if len(rec) == 2 and rec[0] == b"__context__":
            current = rec[1].decode()
            got[current] = []
        else:
            got.setdefault(current, []).append(rec)
    expected = {c: [[a.encode() for a in rec] for rec in CONTEXTS[c][1](value)] for c in contexts}
    if created or got != expected:
        # Re-run one by one for a precise failure message.
        for c in contexts:
            check(*CONTEXTS[c], value, tmp_path)
    assert created == []
    assert got == expected


def test_harness_detects_naive_substitution(tmp_path: Path) -> None:
    # Negative control: pasting the value or leaving the variable unquoted fails.
    records, _, _, created = run_bash("V='$(touch canary)'; eval \"P $V\"", tmp_path)
    assert created == ["canary"]
    records, _, _, _ = run_bash("V='a  b*'; P $V", tmp_path)
    assert records != [[b"a  b*"]]


def test_harness_detects_arithmetic_injection(tmp_path: Path) -> None:
    # Why arithmetic contexts are guarded: bash evaluates subscripts in values.
    _, _, _, created = run_bash("V='a[$(touch canary)]'; : $(( \"$V\" + 1 ))", tmp_path)
    assert created == ["canary"]


# -- arithmetic contexts -------------------------------------------------------------------

ARITH: dict[str, tuple[str, Callable[[int], list[list[str]]]]] = {
    "dollar_paren": (f"P $(( {X} + 1 ))", lambda n: [[str(n + 1)]]),
    "dollar_paren_dquoted": (f'P "$(( "{X}" * 2 ))"', lambda n: [[str(n * 2)]]),
    "dollar_bracket": (f"P $[ {X} + 1 ]", lambda n: [[str(n + 1)]]),
    "arith_command": (f"(( {X} >= -100 )) && P ok", lambda n: [["ok"]]),
    "dbracket_compare": (f"[[ {X} -ge -100 ]] && P ok", lambda n: [["ok"]]),
    "subscript": (f'a=(10 11 12 13 14 15); P "${{a[{X}]}}"', lambda n: [[str(10 + n)]]),
    "offset": (f's=abcdef; P "${{s:{X}:1}}"', lambda n: [["abcdef"[n]]]),
    "for_arith": (f"for ((i = 0; i < {X}; i++)); do P $i; done", lambda n: [[str(i)] for i in range(n)]),
    "arith_in_cmdsub_in_dquote": (f'P "$(echo $(( {X} )))"', lambda n: [[str(n)]]),
}


@pytest.mark.parametrize("context", sorted(ARITH))
@pytest.mark.parametrize("number", [0, 1, 4])
def test_arithmetic_with_integers(context: str, number: int, tmp_path: Path) -> None:
    template, expect = ARITH[context]
    records, _, err, created = run_bash(render(template, str(number)), tmp_path)
    assert created == []
    assert records == [[a.encode() for a in rec] for rec in expect(number)], err


@pytest.mark.parametrize("context", sorted(ARITH))
@pytest.mark.parametrize(
    "value",
    ["a[$(touch canary)]", "x[`touch canary`]", "$(touch canary)", "1+a[$(touch canary)]", "HOME", "1.5", "0x10", ""],
)
def test_arithmetic_never_evaluates_other_values(context: str, value: str, tmp_path: Path) -> None:
    template, _ = ARITH[context]
    records, _, err, created = run_bash(render(template, value), tmp_path)
    assert created == []
    if value:
        # bash fails on the guard token instead of evaluating anything
        assert "inputs.x_is_not_an_integer" in err
        # the command stops there; at most an enclosing $( ) yields ""
        assert records in ([], [[b""]])


if HAVE_HYPOTHESIS:  # optional; the property tests need it
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    @pytest.mark.slow
    @settings(
        max_examples=200,
        database=None,  # keep no example database in the checkout
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture],
    )
    @given(
        value=st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=40),
        context=st.sampled_from(sorted(CONTEXTS)),
    )
    def test_round_trip_property(value: str, context: str, tmp_path: Path) -> None:
        template, expect = CONTEXTS[context]
        check(template, expect, value, tmp_path)
