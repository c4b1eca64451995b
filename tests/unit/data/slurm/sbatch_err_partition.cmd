{"user": "alice", "argv": ["sbatch", "--parsable", "-p", "nosuchpart"], "returncode": 1}
