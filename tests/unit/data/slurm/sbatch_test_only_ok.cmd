{"user": "alice", "argv": ["sbatch", "--parsable", "--test-only", "-J", "rec-testonly"], "returncode": 0}
