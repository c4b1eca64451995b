"""Helpers shared by the steps: read the CSV data set, the logistic model."""

from __future__ import annotations

import csv
import math
from pathlib import Path


def read_rows(folder: str) -> list[tuple[float, float, int]]:
    """The (x1, x2, label) rows of ``<folder>/data.csv``."""
    with open(Path(folder) / "data.csv", newline="") as fh:
        return [(float(r["x1"]), float(r["x2"]), int(r["label"])) for r in csv.DictReader(fh)]


def predict(w: list[float], x1: float, x2: float) -> float:
    """P(label = 1) under the logistic model ``w = [bias, w1, w2]``."""
    z = w[0] + w[1] * x1 + w[2] * x2
    return 1.0 / (1.0 + math.exp(-max(min(z, 30.0), -30.0)))
