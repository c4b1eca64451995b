"""Make a small synthetic two-class data set (no download): train and test CSV files."""

from __future__ import annotations

import argparse
import csv
import random
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n_samples", type=int, default=400)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--test_fraction", type=float, default=0.25)
    parser.add_argument("--train_data", required=True)
    parser.add_argument("--test_data", required=True)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    rows = []
    for i in range(args.n_samples):
        label = i % 2
        centre = 1.0 if label else -1.0
        rows.append((round(rng.gauss(centre, 0.8), 6), round(rng.gauss(centre, 0.8), 6), label))
    rng.shuffle(rows)
    n_test = int(len(rows) * args.test_fraction)
    for folder, part in ((args.test_data, rows[:n_test]), (args.train_data, rows[n_test:])):
        out = Path(folder)
        out.mkdir(parents=True, exist_ok=True)
        with open(out / "data.csv", "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["x1", "x2", "label"])
            writer.writerows(part)
    print(f"get_data: {len(rows) - n_test} training rows, {n_test} test rows")


if __name__ == "__main__":
    main()
