"""``python -m benchmarks``: see :mod:`benchmarks.core`."""

import sys

from benchmarks.core import main

sys.exit(main())
