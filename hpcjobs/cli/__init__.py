"""The ``hpcjobs`` command line (typer).  Thin: parse, call :mod:`hpcjobs.api`, print."""
