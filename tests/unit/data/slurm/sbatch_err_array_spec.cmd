{"user": "alice", "argv": ["sbatch", "--parsable", "--array=5-1"], "returncode": 1}
