{"user": "alice", "argv": ["sbatch", "--parsable", "-J", "rec-stdin", "-o", "/dev/null"], "returncode": 0}
