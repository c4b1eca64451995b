{"user": "alice", "argv": ["sbatch", "--parsable"], "returncode": 1}
