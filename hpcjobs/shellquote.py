"""Quoting values for the bash and sbatch scripts hpcjobs renders.

Three helpers, one per place a user-controlled string can land in a script:

* :func:`shq` -- a value that becomes one bash *word* (``export V=<here>``,
  ``cd <here>``).  The word evaluates to exactly the value's bytes, and the
  rendered text never contains a raw newline or carriage return taken from the
  value, so a value can never start a new script line (for instance a fake
  ``#SBATCH`` directive).
* :func:`shq_env_name` -- the name of an exported environment variable.
* :func:`check_directive_value` -- a value inside an ``#SBATCH`` header line,
  which Slurm parses with its own, quote-unaware rules, so it is validated
  rather than quoted.

Only these functions may put user text into a rendered script.
"""

from __future__ import annotations

import re

from hpcjobs.errors import ValidationError

__all__ = [
    "FORBIDDEN_ENV_NAMES",
    "FORBIDDEN_ENV_PREFIXES",
    "check_directive_value",
    "shq",
    "shq_env_name",
]

# Characters that mean nothing to bash in any position of a word.  "=" is safe
# because shq() output is never the first word of a simple command; "%" and ","
# are only special inside ${...}, which needs "$" and braces.
_PLAIN_RE = re.compile(r"[A-Za-z0-9_./:=@%+,-]+", re.ASCII)

_ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*", re.ASCII)

_DIRECTIVE_RE = re.compile(r"[A-Za-z0-9_.,:=+@%/\-\[\]]+", re.ASCII)

#: Environment variable names a job may not set, with the reason shown to the user.
#: They change how the job's own bash script is read or traced, so setting them
#: would let a job file rewrite the script hpcjobs generated.
FORBIDDEN_ENV_NAMES: dict[str, str] = {
    "BASH_ENV": "bash runs the file it names before any non-interactive script",
    "ENV": "sh-compatible shells run the file it names at start-up",
    "SHELLOPTS": "it switches shell options on inside the generated script",
    "BASHOPTS": "it switches shell options on inside the generated script",
    "PS4": "it is expanded (and can run commands) on every traced line",
    "IFS": "it changes how the generated script splits words",
    "CDPATH": "it changes where the generated script's 'cd' commands go",
    "GLOBIGNORE": "it changes how the generated script expands file names",
}

#: Name prefixes a job may not set, with the reason shown to the user.
FORBIDDEN_ENV_PREFIXES: dict[str, str] = {
    "BASH_FUNC_": "bash imports such variables as shell functions",
    "SLURM_": "Slurm sets these itself; set resources in the job file instead",
    "SBATCH_": "they override #SBATCH directives; set resources in the job file instead",
}


def _is_control(ch: str) -> bool:
    """True for characters that must never appear raw in a rendered script.

    Covers ASCII controls (newline, CR, tab, ESC...), DEL, and every other
    character Python does not consider printable: C1 controls, Unicode line and
    paragraph separators, and format characters such as U+202E (right-to-left
    override), which would make the script read differently from what it does.
    """
    return not ch.isprintable()


def _check_encodable(value: str, what: str) -> None:
    if "\x00" in value:
        # bash strings and environment entries are NUL-terminated C strings, so
        # the value would be silently cut at the NUL.
        raise ValidationError(
            f"{what} contains a NUL character",
            hint="NUL bytes cannot be passed through a shell or the environment",
        )
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValidationError(
            f"{what} is not valid Unicode (lone surrogate at position {exc.start})",
        ) from exc


def shq(value: str) -> str:
    """Quote *value* as one bash word that evaluates to exactly its UTF-8 bytes.

    * non-empty values made only of ``[A-Za-z0-9_./:=@%+,-]`` are returned unchanged;
    * values with a control or otherwise non-printable character (newline, CR,
      tab, ESC, DEL, U+202E...) use ANSI-C quoting ``$'...'`` where ``\\``, ``'``
      and each UTF-8 byte of every such character is written as ``\\xHH``;
    * anything else is single-quoted, ``'`` written as ``'\\''``.

    Printable non-ASCII text (accents, CJK, emoji) stays raw UTF-8 inside the
    quotes.  The result is meant for an unquoted position in a bash script (it is
    not valid inside ``"..."``).

    Raises:
        ValidationError: the value contains NUL or a lone surrogate.
    """
    _check_encodable(value, "value")
    if _PLAIN_RE.fullmatch(value):
        return value
    if any(_is_control(ch) for ch in value):
        return "$'" + "".join(_ansi_c_char(ch) for ch in value) + "'"
    return "'" + value.replace("'", "'\\''") + "'"


def _ansi_c_char(ch: str) -> str:
    if ch == "\\":
        return "\\\\"
    if ch == "'":
        return "\\'"
    if _is_control(ch):
        # Byte escapes rather than \\uHHHH: bash converts \\u through the current
        # locale and would mangle it under LANG=C, while \\xHH is always one byte.
        # bash reads at most two hex digits, so a following literal hex digit is safe.
        return "".join(f"\\x{b:02x}" for b in ch.encode("utf-8"))
    return ch


def shq_env_name(name: str) -> str:
    """Validate and return an environment variable name a job may export.

    The name must match ``^[A-Za-z_][A-Za-z0-9_]*$``.  Names in
    :data:`FORBIDDEN_ENV_NAMES` (``BASH_ENV``, ``ENV``, ``SHELLOPTS``,
    ``BASHOPTS``, ``PS4``, ``IFS``, ``CDPATH``, ``GLOBIGNORE``) and names starting
    with a prefix in :data:`FORBIDDEN_ENV_PREFIXES` (``BASH_FUNC_``, ``SLURM_``,
    ``SBATCH_``) are refused.  ``PATH``, ``LD_LIBRARY_PATH``, ``LD_PRELOAD`` and
    the like are allowed: jobs legitimately set them and they only affect the
    job's own processes.

    Raises:
        ValidationError: the name is malformed or reserved.
    """
    if not _ENV_NAME_RE.fullmatch(name):
        raise ValidationError(
            f"invalid environment variable name {name!r}",
            hint="names must start with a letter or '_' and contain only letters, digits and '_'",
        )
    reason = FORBIDDEN_ENV_NAMES.get(name)
    if reason is not None:
        raise ValidationError(
            f"environment variable {name} cannot be set by a job: {reason}",
        )
    for prefix, reason in FORBIDDEN_ENV_PREFIXES.items():
        if name.startswith(prefix):
            raise ValidationError(
                f"environment variable {name} cannot be set by a job",
                hint=f"names starting with {prefix} are reserved: {reason}",
            )
    return name


def check_directive_value(value: str, field: str) -> str:
    """Validate a value that goes into an ``#SBATCH`` line and return it unchanged.

    Slurm reads ``#SBATCH`` lines with its own tokenizer, so quoting cannot be
    relied on; instead only ``[A-Za-z0-9_.,:=+@%/\\-\\[\\]]`` is allowed (no
    whitespace, quotes, ``#``, ``$`` or newlines).  *field* names the job-file field
    in the error.

    Raises:
        ValidationError: the value is empty or contains another character.
    """
    if not value:
        raise ValidationError("must not be empty", field=field)
    if _DIRECTIVE_RE.fullmatch(value):
        return value
    bad = next(ch for ch in value if not _DIRECTIVE_RE.fullmatch(ch))
    raise ValidationError(
        f"{value!r} contains {bad!r}, which cannot be used in a Slurm directive",
        hint="allowed: letters, digits and _ . , : = + @ % / - [ ]",
        field=field,
    )
