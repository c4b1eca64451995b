"""A toy trial for the hello sweep: a made-up accuracy that depends on the parameters."""

import argparse
import math

import mlflow

parser = argparse.ArgumentParser()
parser.add_argument("--lr", type=float, required=True)
parser.add_argument("--layers", type=int, required=True)
args = parser.parse_args()

# best near lr = 0.01 with 2 layers
score = 0.9 - 0.1 * abs(math.log10(args.lr) + 2) + 0.02 * args.layers
for epoch in range(3):
    mlflow.log_metric("accuracy", round(score - 0.05 * (2 - epoch), 4), step=epoch)
print(f"lr={args.lr} layers={args.layers} accuracy={score:.4f}")
