"""Component A: print a greeting (its input)."""

import argparse

parser = argparse.ArgumentParser()
parser.add_argument("--greeting", default="hello")
args = parser.parse_args()
print(f"I'm component A: {args.greeting}")
