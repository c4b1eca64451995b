{"user": "alice", "argv": ["sbatch", "--parsable", "--array=0-1001"], "returncode": 1}
