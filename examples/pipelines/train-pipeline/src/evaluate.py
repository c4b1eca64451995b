"""Score the model on the test set; write metrics.json into the report folder and ./outputs."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from common import predict, read_rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", required=True)
    parser.add_argument("--test_data", required=True)
    parser.add_argument("--report", required=True)
    args = parser.parse_args()
    model = json.loads((Path(args.model) / "model.json").read_text())
    rows = read_rows(args.test_data)
    correct = sum(1 for x1, x2, y in rows if (predict(model["weights"], x1, x2) >= 0.5) == bool(y))
    metrics = {"accuracy": correct / len(rows), "test_rows": len(rows), "train_loss": model["train_loss"]}
    out = Path(args.report)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1))
    Path("outputs").mkdir(exist_ok=True)
    (Path("outputs") / "metrics.json").write_text(json.dumps(metrics, indent=1))
    print(f"evaluate: accuracy {metrics['accuracy']:.3f} on {len(rows)} test rows")


if __name__ == "__main__":
    main()
