"""Component B: write world.txt into its output folder."""

import argparse
from pathlib import Path

parser = argparse.ArgumentParser()
parser.add_argument("--world_output", required=True)
args = parser.parse_args()
out = Path(args.world_output)
out.mkdir(parents=True, exist_ok=True)
(out / "world.txt").write_text("world\n")
print(f"I'm component B: wrote {out / 'world.txt'}")
