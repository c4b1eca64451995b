"""hpcjobs benchmarks: measured side by side with raw Slurm and submitit in the same run."""
