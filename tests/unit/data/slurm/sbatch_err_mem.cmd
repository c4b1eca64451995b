{"user": "alice", "argv": ["sbatch", "--parsable", "--mem=100G"], "returncode": 1}
