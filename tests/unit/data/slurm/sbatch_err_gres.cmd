{"user": "alice", "argv": ["sbatch", "--parsable", "--gres=gpu:9"], "returncode": 1}
