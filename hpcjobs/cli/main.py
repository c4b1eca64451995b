"""Entry point of the ``hpcjobs`` command.

The commands are a typer app (:mod:`hpcjobs.cli.app`), imported here only when needed:
``job create`` with plain options runs without typer (:mod:`hpcjobs.cli.fast`), which
saves 0.1-0.3 s of every submission (docs/decisions.md, "Start-up").
"""

from __future__ import annotations

import os
import sys
from typing import Any

from hpcjobs.cli import fast
from hpcjobs.errors import HpcjobsError


def main() -> None:
    """Console-script entry: run the app, turning hpcjobs errors into messages and exit codes."""
    try:
        opts = fast.parse_job_create(sys.argv[1:])
        if opts is not None:
            rv = fast.run_job_create(opts)
        else:
            from hpcjobs.cli.app import app

            rv = app(standalone_mode=False)
        if isinstance(rv, int) and rv:
            sys.exit(rv)
    except HpcjobsError as exc:
        sys.stderr.write(f"error: {exc.render()}\n")
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        sys.exit(130)
    except Exception as exc:
        typer = sys.modules.get("typer")
        if typer is not None and isinstance(exc, typer.Exit):
            sys.exit(exc.exit_code)
        # typer >= 0.29 bundles its own click (typer._click); older ones use click itself
        for mod in ("typer._click.exceptions", "click.exceptions"):
            cx = sys.modules.get(mod)
            if cx is None:
                continue
            if isinstance(exc, cx.ClickException):
                exc.show()  # a usage error (unknown option, missing value) exits 2
                sys.exit(exc.exit_code)
            if isinstance(exc, cx.Abort):
                sys.stderr.write("aborted\n")
                sys.exit(130)
        if os.environ.get("HPCJOBS_DEBUG"):
            raise
        sys.stderr.write(f"error: unexpected {type(exc).__name__}: {exc}\n  (set HPCJOBS_DEBUG=1 to see the traceback)\n")
        sys.exit(1)
    finally:
        from hpcjobs import backends

        backends.close_all()


def __getattr__(name: str) -> Any:
    # `from hpcjobs.cli.main import app` (the typer app) keeps working
    if name in ("app", "job_app", "site_app", "compute_app"):
        from hpcjobs.cli import app as _app

        return getattr(_app, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if __name__ == "__main__":
    main()
