{"user": "alice", "argv": ["sbatch", "--parsable", "--no-such-option"], "returncode": 255}
