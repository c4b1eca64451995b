"""hpcjobs: run Azure ML v2 job YAML on Slurm clusters, over SSH, or on this machine.

The public Python API is :mod:`hpcjobs.api`; the ``hpcjobs`` command line calls nothing else.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
