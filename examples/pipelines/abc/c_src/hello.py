"""Component C: read the world.txt component B wrote."""

import argparse
from pathlib import Path

parser = argparse.ArgumentParser()
parser.add_argument("--world_input", required=True)
parser.add_argument("--suffix", default="")
args = parser.parse_args()
text = (Path(args.world_input) / "world.txt").read_text().strip()
print(f"I'm component C: hello {text}{args.suffix}")
