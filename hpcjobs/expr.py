"""The ``${{...}}`` expression language of job commands.

A job's ``command`` is bash with Azure ML expressions in it:

* ``${{inputs.lr}}``, ``${{outputs.model}}``, ``${{search_space.lr}}``,
  ``${{parent.jobs.train.outputs.model}}``, ``${{name}}`` -- spaces inside the
  braces are allowed (``${{ inputs.lr }}``);
* ``$[[ ... ]]`` -- an optional segment, kept only when an input it references
  has a value (:func:`resolve_optional`);
* deprecated forms rewritten by :func:`normalize_legacy`: ``{inputs.x}`` and
  legacy optional segments ``[--x ${{inputs.x}}]``.

Callers run, in order: :func:`normalize_legacy`, :func:`find_refs` (to validate
the names), :func:`resolve_optional`, then :func:`substitute`.

The quoting rule of :func:`substitute`
--------------------------------------
A value is **never** pasted into the script text.  Every ``${{...}}`` becomes a
reference to a shell variable the caller exports (its value written with
:func:`hpcjobs.shellquote.shq`), quoted for the bash context it stands in, so
that the program receives the value's exact bytes, as one argument (or as one
part of the word it is embedded in), with no word splitting, globbing, tilde or
brace expansion, and without bash ever parsing it as code:

=============================================  ===============================
context of the expression                      becomes
=============================================  ===============================
unquoted (also in ``$(...)``, backticks,       ``"${VAR}"``
``<(...)``, ``${x:-...}``, ``[[ ]]``, comments)
inside ``"..."`` or an unquoted here-document  ``${VAR}``
inside ``'...'``                               ``'"${VAR}"'`` (close, reopen)
inside ``$'...'``                              ``'"${VAR}"$'``
arithmetic: ``$(( ))``, ``(( ))``, ``$[ ]``,   ``"${VAR/*[!0123456789+-]*/@inputs.x_is_not_an_integer@}"``
an operand of ``-eq -ne -lt -le -gt -ge`` in
``[[ ]]``, an array subscript ``${a[...]}``,
a substring offset ``${s:...}``
inside a quoted here-document (``<<'EOF'``)    error: nothing can expand there
=============================================  ===============================

Contexts nest: inside ``"$( ... )"`` quoting starts afresh (unquoted), and a
``"`` there opens a new double-quoted context.

Arithmetic is special because bash *evaluates* the text of a value used there,
array subscripts included, so ``a[$(cmd)]`` would run ``cmd``.  The guard
replaces any value that is not made only of digits, ``+`` and ``-`` by a token
that makes bash fail with a syntax error naming the expression, before anything
is evaluated.

A backslash directly before ``${{`` is treated as bash would treat it in that
context: where it escapes ``$`` (unquoted, ``"..."``, here-documents, backticks)
it is dropped and the expression is still substituted -- an expression always
means its value; to write a literal ``${{`` use ``$\\{{``.  Inside ``'...'`` the
backslash is literal and stays; inside ``$'...'`` ``\\$`` is not an escape, so a
literal backslash stays in front of the value.  A ``$`` directly before an
expression (``$${{inputs.x}}``) stays a literal ``$``.

Limitations (best effort, not a full bash parser): only ``$((``, ``((`` at the
start of a word, ``$[``, ``[[ ]]`` comparisons, subscripts and offsets are
recognised as arithmetic (``let``, ``declare -i``, ``[[ -v ]]``, ``${!x}`` are
not); ``case`` patterns are recognised inside ``$( )`` only; a command that hands
its text to another shell (``bash -c "..."``, ``eval``, ``ssh``) lets that shell
interpret the value, as it would with any variable.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hpcjobs.errors import ValidationError

__all__ = [
    "ExpressionError",
    "Ref",
    "find_refs",
    "line_col",
    "normalize_legacy",
    "resolve_optional",
    "substitute",
]

_OPEN = "${{"
_OPT_OPEN = "$[["
_OPT_CLOSE = "]]"

# Names: first part an identifier, further dotted parts may start with a digit
# or contain "-" (step names, parameter groups); the SDK allows [\w.-].
_REF_RE = re.compile(r"\$\{\{[ \t]*([A-Za-z_][\w-]*(?:\.[\w-]+)*)[ \t]*\}\}", re.ASCII)
_VAR_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*", re.ASCII)
_REF_HINT = "expressions look like ${{inputs.<name>}}, ${{outputs.<name>}} or ${{search_space.<name>}}"

# {inputs.x} not preceded by "{" or "$" (so neither ${{inputs.x}} nor bash's ${x}).
_SINGLE_BRACE_RE = re.compile(
    r"(?<![{$])\{[ \t]*((?:inputs|outputs|search_space)\.[A-Za-z_][\w-]*(?:\.[\w-]+)*)[ \t]*\}(?!\})",
    re.ASCII,
)
# A legacy optional segment is one shell word "[...]": "[" at the start of a word
# and not followed by a blank or "[" (that would be the test command "[ ... ]" or
# "[["), "]" ending the word, and no brackets or newlines in between.
_LEGACY_OPT_RE = re.compile(r"(?<![^\s;&|(])\[(?![\s\[])([^\[\]\n]*)\](?=$|[\s;&|)])")
_INPUT_REF_RE = re.compile(r"\$\{\{[ \t]*inputs\.")

_ARITH_TEST_OPS = frozenset({"-eq", "-ne", "-lt", "-le", "-gt", "-ge"})
# Everything that is not a plain (signed) integer is rejected by the guard.
_INT_GUARD_PATTERN = "*[!0123456789+-]*"

_NAME = r"(?:[A-Za-z_][A-Za-z0-9_]*|[0-9]+|[@*#?$!-])"
# Text after "${" up to the expression: still inside "name[" -> a subscript.
_PARAM_SUBSCRIPT_RE = re.compile(r"[!#]?[A-Za-z_][A-Za-z0-9_]*\[[^\]]*\Z")
# "name:" not followed by - = ? + -> substring offset/length (both arithmetic).
_PARAM_OFFSET_RE = re.compile(r"[!#]?" + _NAME + r"(?:\[[^\]]*\])?:(?![-=?+])")
# "name:-", "name-", "name:=", ... -> the word after it is a default/alternative.
_PARAM_WORD_OP_RE = re.compile(r"[!#]?" + _NAME + r"(?:\[[^\]]*\])?:?[-=?+]")

_WORD_BREAK = frozenset(" \t\n;&|()<>`")
_META = frozenset(" \t\n;&|()<>")


@dataclass(frozen=True)
class Ref:
    """One ``${{...}}`` expression found in a command."""

    text: str
    """The expression without braces and surrounding blanks, e.g. ``inputs.lr``."""
    namespace: str
    """First dotted part: ``inputs``, ``outputs``, ``search_space``, ``name``, ``parent``..."""
    name: str
    """Everything after the first dot (``lr``, ``jobs.train.outputs.model``); ``""`` if none."""
    start: int
    """Offset of ``$`` in the command."""
    end: int
    """Offset just after the closing ``}}``."""
    optional: bool = False
    """True when the expression is inside a ``$[[ ... ]]`` segment."""


class ExpressionError(ValidationError):
    """A malformed expression or one used where it cannot work.

    The message names the 1-based line and column in the command; :attr:`offset`
    lets callers map it to a position in the job file.
    """

    def __init__(self, message: str, command: str, offset: int, *, hint: str | None = None) -> None:
        line, col = line_col(command, offset)
        super().__init__(
            f"{message} (line {line}, column {col} of the command)",
            hint=hint,
            field="command",
        )
        self.offset = offset
        self.line = line
        self.col = col


def line_col(text: str, offset: int) -> tuple[int, int]:
    """Return the 1-based ``(line, column)`` of *offset* in *text* (columns count characters)."""
    offset = max(0, min(offset, len(text)))
    line = text.count("\n", 0, offset) + 1
    col = offset - (text.rfind("\n", 0, offset) + 1) + 1
    return line, col


def _optional_segments(command: str) -> list[tuple[int, int]]:
    """``(start, end)`` of every ``$[[ ... ]]``, *end* just after ``]]``."""
    segments: list[tuple[int, int]] = []
    pos = 0
    while (start := command.find(_OPT_OPEN, pos)) != -1:
        end = command.find(_OPT_CLOSE, start + len(_OPT_OPEN))
        if end == -1:
            raise ExpressionError(
                "optional segment '$[[' has no closing ']]'",
                command,
                start,
                hint="write optional parts as $[[--flag ${{inputs.name}}]]",
            )
        nested = command.find(_OPT_OPEN, start + len(_OPT_OPEN), end)
        if nested != -1:
            raise ExpressionError("optional segments '$[[ ... ]]' cannot be nested", command, nested)
        segments.append((start, end + len(_OPT_CLOSE)))
        pos = end + len(_OPT_CLOSE)
    return segments


def find_refs(command: str) -> list[Ref]:
    """Return every ``${{ ... }}`` expression in *command*, in order.

    ``${{`` is never valid bash, so every occurrence must be a well-formed
    expression.

    Raises:
        ExpressionError: a ``${{`` is unterminated or malformed, or a ``$[[``
            segment is unbalanced or nested.
    """
    segments = _optional_segments(command)
    refs: list[Ref] = []
    pos = 0
    while (start := command.find(_OPEN, pos)) != -1:
        m = _REF_RE.match(command, start)
        if m is None:
            close = command.find("}}", start)
            if close == -1 or "\n" in command[start:close]:
                msg = "expression '${{' has no closing '}}'"
            else:
                msg = f"malformed expression {command[start : close + 2]!r}"
            raise ExpressionError(msg, command, start, hint=_REF_HINT)
        text = m.group(1)
        namespace, _, name = text.partition(".")
        optional = any(a <= start and m.end() <= b for a, b in segments)
        refs.append(Ref(text, namespace, name, start, m.end(), optional))
        pos = m.end()
    return refs


def normalize_legacy(command: str) -> tuple[str, list[str]]:
    """Rewrite deprecated expression forms; return the new command and warnings.

    * ``{inputs.x}``, ``{outputs.x}``, ``{search_space.x}`` become ``${{...}}``
      (not when already part of ``${{...}}`` or bash's ``${...}``);
    * a legacy optional segment -- one shell word ``[...]`` containing an
      ``${{inputs.*}}`` reference, e.g. ``[--x ${{inputs.x}}]`` -- becomes
      ``$[[...]]``.  Test commands ``[ -f x ]``, ``[[ ... ]]``, ``$[[...]]`` and
      ``${arr[0]}`` are left alone.
    """
    warnings: list[str] = []

    def brace(m: re.Match[str]) -> str:
        new = "${{" + m.group(1) + "}}"
        warnings.append(f"Use of {{}} for parameters is deprecated, instead use ${{{{}}}}: rewrote {m.group(0)!r} to {new!r}")
        return new

    command = _SINGLE_BRACE_RE.sub(brace, command)

    def optional(m: re.Match[str]) -> str:
        if not _INPUT_REF_RE.search(m.group(1)):
            return m.group(0)
        new = _OPT_OPEN + m.group(1) + _OPT_CLOSE
        warnings.append(f"optional segments in single brackets are deprecated, use $[[ ]]: rewrote {m.group(0)!r} to {new!r}")
        return new

    command = _LEGACY_OPT_RE.sub(optional, command)
    return command, warnings


def resolve_optional(command: str, keep: Callable[[str], bool]) -> str:
    """Resolve every ``$[[ ... ]]`` segment of *command*.

    A segment is replaced by its inner text when at least one ``inputs.X`` it
    references has ``keep("X")`` true (the input is set or has a default), and
    removed entirely otherwise.  A segment without any input reference is kept.

    Raises:
        ExpressionError: a segment is nested or unbalanced, or an expression is
            malformed.
    """
    segments = _optional_segments(command)
    if not segments:
        return command
    refs = find_refs(command)
    out: list[str] = []
    pos = 0
    for start, end in segments:
        out.append(command[pos:start])
        names = [r.name for r in refs if start <= r.start < end and r.namespace == "inputs"]
        if not names or any(keep(name) for name in names):
            out.append(command[start + len(_OPT_OPEN) : end - len(_OPT_CLOSE)])
        pos = end
    out.append(command[pos:])
    return "".join(out)


def substitute(command: str, var_for: Callable[[Ref], str]) -> str:
    """Replace every ``${{...}}`` in *command* by a quoted reference to a shell variable.

    ``var_for(ref)`` names the variable (a bash identifier the caller exports
    with the value); the reference is quoted for its bash context as described in
    the module docstring, so the value reaches the program as exactly its bytes,
    as one argument, and is never executed.

    Raises:
        ExpressionError: an expression is malformed, or stands where no
            expansion happens (a quoted here-document, a here-document delimiter).
        ValueError: *command* still has ``$[[`` segments (call
            :func:`resolve_optional` first) or *var_for* returned a bad name.
    """
    if _OPT_OPEN in command:
        raise ValueError("resolve optional '$[[ ... ]]' segments before substituting")
    refs = find_refs(command)
    if not refs:
        return command
    return _Substituter(command, refs, var_for).run()


class _K(enum.Enum):
    TOP = "top level"
    CMDSUB = "$( )"
    BACKTICK = "backticks"
    SQUOTE = "'...'"
    DQUOTE = '"..."'
    ANSIC = "$'...'"
    PARAM = "${ }"
    ARITH = "arithmetic"
    DBRACKET = "[[ ]]"
    COMMENT = "comment"
    HEREDOC = "here-document"
    HEREDOC_QUOTED = "quoted here-document"


# Where bash reads commands: comments, here-documents, (( and [[ start here.
_COMMAND_LEVEL = frozenset({_K.TOP, _K.CMDSUB, _K.BACKTICK})
# Where quotes, $'...' and unquoted words behave as at the command level.
_CODE = _COMMAND_LEVEL | {_K.DBRACKET, _K.ARITH, _K.PARAM}
# Frames that start a fresh quoting context; arithmetic does not reach past them.
_BOUNDARY = _COMMAND_LEVEL | {_K.HEREDOC, _K.HEREDOC_QUOTED, _K.COMMENT}


@dataclass
class _Heredoc:
    delim: str
    strip_tabs: bool
    quoted: bool


@dataclass(eq=False)  # frames are compared by identity
class _Frame:
    kind: _K
    body: int  # offset of the first character after the opening token
    close: str = ""  # ARITH: "))" or "]"
    depth: int = 0  # nesting of ( or [ inside CMDSUB / ARITH
    case_depth: int = 0  # open "case" statements inside CMDSUB
    heredoc: _Heredoc | None = None
    pending: list[_Heredoc] = field(default_factory=list)


class _Substituter:
    """A best-effort bash lexer that tracks the quoting context of each expression."""

    def __init__(self, command: str, refs: list[Ref], var_for: Callable[[Ref], str]) -> None:
        self.s = command
        self.n = len(command)
        self.refs = {r.start: r for r in refs}
        self.var_for = var_for
        self.out: list[str] = []
        self.i = 0
        self.stack: list[_Frame] = [_Frame(_K.TOP, 0)]

    # -- small helpers -------------------------------------------------------

    def put(self, count: int = 1) -> None:
        self.out.append(self.s[self.i : self.i + count])
        self.i += count

    def push(self, kind: _K, count: int, close: str = "") -> None:
        self.put(count)
        self.stack.append(_Frame(kind, self.i, close=close))

    def pop_put(self, count: int = 1) -> None:
        self.put(count)
        self.stack.pop()

    def word_start(self) -> bool:
        return self.i == 0 or self.s[self.i - 1] in _WORD_BREAK

    def word_end(self, at: int) -> bool:
        return at >= self.n or self.s[at] in _META

    # -- main loop -----------------------------------------------------------

    def run(self) -> str:
        s = self.s
        while self.i < self.n:
            top = self.stack[-1]
            if top.heredoc is not None and (self.i == 0 or s[self.i - 1] == "\n") and self.heredoc_end(top):
                continue
            ch = s[self.i]
            if self.backtick(ch, top):
                continue
            if self.i in self.refs:
                self.emit(self.refs[self.i])
                continue
            kind = top.kind
            if kind in _CODE:
                self.step_code(top, ch)
            elif kind is _K.DQUOTE:
                if ch == '"':
                    self.pop_put()
                elif not self.escape_or_dollar(ch, top):
                    self.put()
            elif kind is _K.HEREDOC:
                if not self.escape_or_dollar(ch, top):
                    self.put()
            elif kind is _K.SQUOTE:
                if ch == "'":
                    self.pop_put()
                else:
                    self.put()
            elif kind is _K.ANSIC:
                self.step_ansi_c(ch)
            elif kind is _K.COMMENT:
                if ch == "\n":
                    self.stack.pop()  # the newline belongs to the enclosing frame
                else:
                    self.put()
            else:  # HEREDOC_QUOTED: literal text
                self.put()
        out = "".join(self.out)
        if _OPEN in out:  # every expression must have been replaced
            raise AssertionError("internal error: an expression was not substituted")
        return out

    def backtick(self, ch: str, top: _Frame) -> bool:
        """Handle ``` ` ```: bash ends `...` at the first unescaped backtick, whatever the quotes."""
        inside = any(f.kind is _K.BACKTICK for f in self.stack)
        if inside and ch == "\\" and self.s.startswith("`", self.i + 1):
            self.put(2)
            return True
        if ch != "`":
            return False
        if inside:
            self.put()
            while self.stack.pop().kind is not _K.BACKTICK:
                pass
            return True
        if top.kind in (_K.SQUOTE, _K.ANSIC, _K.COMMENT, _K.HEREDOC_QUOTED):
            return False
        self.push(_K.BACKTICK, 1)
        return True

    def escape_or_dollar(self, ch: str, top: _Frame) -> bool:
        """Backslash escapes and ``$`` constructs, common to code, "..." and here-documents."""
        s, i = self.s, self.i
        if ch == "\\":
            if i + 1 in self.refs:
                self.i += 1  # "\${{x}}": the backslash goes, the expression stays (module docstring)
            else:
                self.put(2)
            return True
        if ch != "$":
            return False
        if i + 1 in self.refs:
            # "$${{x}}": keep the "$" literal rather than letting it form "$$" or '$"'.
            self.out.append("\\$")
            self.i += 1
        elif s.startswith("$((", i):
            self.push(_K.ARITH, 3, close="))")
        elif s.startswith("$(", i):
            self.push(_K.CMDSUB, 2)
        elif s.startswith("${", i):
            self.push(_K.PARAM, 2)
        elif s.startswith("$[", i):
            self.push(_K.ARITH, 2, close="]")
        elif top.kind in _CODE and s.startswith("$'", i):
            self.push(_K.ANSIC, 2)
        elif top.kind in _CODE and s.startswith('$"', i):
            self.push(_K.DQUOTE, 2)
        else:
            return False
        return True

    def step_ansi_c(self, ch: str) -> None:
        if ch == "\\":
            if self.i + 1 in self.refs:
                # bash keeps "\$" in $'...' as two characters; keep the backslash
                # literal, escaped so it cannot swallow the closing quote.
                self.out.append("\\\\")
                self.i += 1
            else:
                self.put(2)
        elif ch == "'":
            self.pop_put()
        else:
            self.put()

    def step_code(self, top: _Frame, ch: str) -> None:
        s, i, kind = self.s, self.i, top.kind
        if self.escape_or_dollar(ch, top):
            return
        if ch == "'":
            if kind is _K.PARAM and self.param_quote_is_literal(top):
                self.put()
            else:
                self.push(_K.SQUOTE, 1)
            return
        if ch == '"':
            self.push(_K.DQUOTE, 1)
            return
        if kind in _COMMAND_LEVEL and self.step_command_level(top, ch):
            return
        if kind is _K.CMDSUB:
            if ch == "(":
                top.depth += 1
            elif ch == ")":
                if top.depth == 0 and top.case_depth == 0:
                    self.pop_put()
                    return
                top.depth = max(0, top.depth - 1)
        elif kind is _K.ARITH:
            if top.close == "))":
                if ch == "(":
                    top.depth += 1
                elif ch == ")":
                    if top.depth == 0 and s.startswith("))", i):
                        self.pop_put(2)
                        return
                    top.depth = max(0, top.depth - 1)
            elif ch == "[":
                top.depth += 1
            elif ch == "]":
                if top.depth == 0:
                    self.pop_put()
                    return
                top.depth -= 1
        elif kind is _K.PARAM:
            if ch == "}":
                self.pop_put()
                return
        elif kind is _K.DBRACKET and s.startswith("]]", i) and s[i - 1].isspace() and self.word_end(i + 2):
            # i > 0 holds: a DBRACKET frame starts after "[[".
            self.pop_put(2)
            return
        self.put()

    def step_command_level(self, top: _Frame, ch: str) -> bool:
        """Constructs bash recognises only where a command can be (top, ``$( )``, backticks)."""
        s, i = self.s, self.i
        if ch == "\n" and top.pending:
            self.put()
            # Bodies follow one another; the first pending one is read first.
            for doc in reversed(top.pending):
                kind = _K.HEREDOC_QUOTED if doc.quoted else _K.HEREDOC
                self.stack.append(_Frame(kind, self.i, heredoc=doc))
            top.pending = []
            return True
        if s.startswith("<<<", i):
            self.put(3)  # a here-string: its word is ordinary text
            return True
        if s.startswith("<<", i):
            return self.heredoc_start(top)
        if ch in "<>" and s.startswith("(", i + 1):
            self.push(_K.CMDSUB, 2)  # process substitution
            return True
        if not self.word_start():
            return False
        if ch == "#":
            self.stack.append(_Frame(_K.COMMENT, i))
            self.put()
            return True
        if s.startswith("((", i):
            self.push(_K.ARITH, 2, close="))")
            return True
        if s.startswith("[[", i) and i + 2 < self.n and s[i + 2].isspace():
            self.push(_K.DBRACKET, 2)
            return True
        if top.kind is _K.CMDSUB:
            # ")" ends a case pattern, not the $( ), while a case is open.
            if s.startswith("case", i) and i + 4 < self.n and s[i + 4].isspace():
                top.case_depth += 1
            elif s.startswith("esac", i) and self.word_end(i + 4):
                top.case_depth = max(0, top.case_depth - 1)
        return False

    # -- here-documents ------------------------------------------------------

    def heredoc_start(self, top: _Frame) -> bool:
        s, n = self.s, self.n
        j = self.i + 2
        strip_tabs = j < n and s[j] == "-"
        if strip_tabs:
            j += 1
        while j < n and s[j] in " \t":
            j += 1
        delim: list[str] = []
        quoted = False
        while j < n and s[j] not in _META:
            c = s[j]
            if c == "'":
                k = s.find("'", j + 1)
                k = n if k == -1 else k
                delim.append(s[j + 1 : k])
                quoted, j = True, k + 1
            elif c == '"':
                quoted, j = True, j + 1
                while j < n and s[j] != '"':
                    if s[j] == "\\" and j + 1 < n and s[j + 1] in '"\\$`':
                        j += 1
                    delim.append(s[j])
                    j += 1
                j += 1
            elif c == "\\":
                quoted = True
                delim.append(s[j + 1 : j + 2])
                j += 2
            else:
                delim.append(c)
                j += 1
        j = min(j, n)
        if not delim:
            return False
        inside = [r for r in self.refs if self.i <= r < j]
        if inside:
            raise ExpressionError(
                "an expression cannot be used as a here-document delimiter",
                s,
                inside[0],
            )
        top.pending.append(_Heredoc("".join(delim), strip_tabs, quoted))
        self.put(j - self.i)
        return True

    def heredoc_end(self, top: _Frame) -> bool:
        """At the start of a body line: if it is the delimiter, consume it and leave the body."""
        assert top.heredoc is not None
        eol = self.s.find("\n", self.i)
        eol = self.n if eol == -1 else eol
        line = self.s[self.i : eol]
        if top.heredoc.strip_tabs:
            line = line.lstrip("\t")
        if line != top.heredoc.delim:
            return False
        self.pop_put(min(eol + 1, self.n) - self.i)
        return True

    # -- ${ ... } ------------------------------------------------------------

    def in_double_quotes(self, below: _Frame) -> bool:
        """Whether the frames under *below* (up to a command boundary) are double-quoted."""
        idx = next(k for k, f in enumerate(self.stack) if f is below)
        for f in reversed(self.stack[:idx]):
            if f.kind in (_K.DQUOTE, _K.HEREDOC):
                return True
            if f.kind in _BOUNDARY:
                return False
        return False

    def param_quote_is_literal(self, frame: _Frame) -> bool:
        # In "${x:-'a'}" bash keeps the single quotes; in "${x#'a'}" (patterns)
        # and in unquoted ${x:-'a'} they quote.
        prefix = self.s[frame.body : self.i]
        return bool(_PARAM_WORD_OP_RE.match(prefix)) and self.in_double_quotes(frame)

    # -- emitting an expression ----------------------------------------------

    def emit(self, ref: Ref) -> None:
        var = self.var_for(ref)
        if not _VAR_RE.fullmatch(var):
            raise ValueError(f"var_for returned {var!r} for {ref.text!r}, not a shell variable name")
        top = self.stack[-1]
        if top.kind is _K.HEREDOC_QUOTED:
            raise ExpressionError(
                f"${{{{{ref.text}}}}} cannot be used inside a quoted here-document (<<'EOF'), where bash expands nothing",
                self.s,
                ref.start,
                hint="use an unquoted delimiter (<<EOF) and escape other '$' in the body as '\\$'",
            )
        if self.arithmetic(ref):
            inner = f"${{{var}/{_INT_GUARD_PATTERN}/@{ref.text}_is_not_an_integer@}}"
        else:
            inner = f"${{{var}}}"
        if top.kind in (_K.DQUOTE, _K.HEREDOC):
            text = inner
        elif top.kind is _K.SQUOTE:
            text = f"'\"{inner}\"'"
        elif top.kind is _K.ANSIC:
            text = f"'\"{inner}\"$'"
        else:
            text = f'"{inner}"'
        self.out.append(text)
        self.i = ref.end

    def arithmetic(self, ref: Ref) -> bool:
        """Whether bash evaluates the text at *ref* as an arithmetic expression."""
        for f in reversed(self.stack):
            if f.kind is _K.ARITH:
                return True
            if f.kind is _K.PARAM:
                prefix = self.s[f.body : ref.start]
                if _PARAM_SUBSCRIPT_RE.match(prefix) or _PARAM_OFFSET_RE.match(prefix):
                    return True
            elif f.kind is _K.DBRACKET:
                return self.arith_test_operand(f, ref)
            elif f.kind in _BOUNDARY:
                return False
        return False

    def arith_test_operand(self, frame: _Frame, ref: Ref) -> bool:
        """In ``[[ ]]``: is the word holding *ref* an operand of -eq, -lt, ...?"""
        s = self.s
        a = ref.start
        while a > frame.body and not s[a - 1].isspace():
            a -= 1
        b = ref.end
        while b < self.n and not s[b].isspace():
            b += 1
        neighbours = s[frame.body : a].split()[-1:] + s[b:].split()[:1]
        return any(w in _ARITH_TEST_OPS for w in neighbours)


def format_value(v: Any) -> str:
    """How a value (an input, a sampled hyperparameter) is written into a command line.

    Python's ``str()`` of the value, as Azure ML's Python runtime substitutes it:
    ints as ints (``32``), floats by their shortest round-trip ``repr`` (``0.001``,
    ``1e-05``), bools as ``True``/``False``, strings as they are.  Nothing is
    shell-quoted here: quoting is the command renderer's business.
    """
    if isinstance(v, bool):
        return "True" if v else "False"
    if isinstance(v, int):
        return str(int(v))
    if isinstance(v, float):
        return repr(float(v))
    return str(v)
