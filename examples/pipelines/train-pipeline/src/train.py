"""Fit a logistic regression by batch gradient descent; write model.json into the model folder."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from common import predict, read_rows

try:
    import mlflow
except ImportError:  # the pipeline runs without MLflow; a sweep over this step needs the metric
    mlflow = None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--training_data", required=True)
    parser.add_argument("--learning_rate", type=float, default=0.1)
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--l2", type=float, default=0.0)
    parser.add_argument("--model", required=True)
    args = parser.parse_args()
    rows = read_rows(args.training_data)
    w = [0.0, 0.0, 0.0]
    loss = 0.0
    for _ in range(args.epochs):
        grad = [0.0, 0.0, 0.0]
        loss = 0.0
        for x1, x2, y in rows:
            p = predict(w, x1, x2)
            err = p - y
            grad[0] += err
            grad[1] += err * x1
            grad[2] += err * x2
            loss -= math.log(p if y else 1.0 - p + 1e-12) if p > 0 else 30.0
        n = len(rows)
        w = [w[0] - args.learning_rate * grad[0] / n] + [
            wi - args.learning_rate * (g / n + args.l2 * wi) for wi, g in zip(w[1:], grad[1:], strict=True)
        ]
        loss /= n
    out = Path(args.model)
    out.mkdir(parents=True, exist_ok=True)
    (out / "model.json").write_text(json.dumps({"weights": w, "train_loss": loss, "rows": len(rows)}, indent=1))
    if mlflow is not None:
        # the primary metric of tune-pipeline.yml's sweep step
        mlflow.log_metric("train_loss", loss)
    # ./outputs comes back with `hpcjobs job download`
    Path("outputs").mkdir(exist_ok=True)
    (Path("outputs") / "train_loss.txt").write_text(f"{loss:.6f}\n")
    print(f"train: {len(rows)} rows, {args.epochs} epochs, loss {loss:.4f}, weights {[round(x, 3) for x in w]}")


if __name__ == "__main__":
    main()
