{"user": "alice", "argv": ["sbatch", "--parsable", "--test-only", "-p", "nosuchpart"], "returncode": 1}
