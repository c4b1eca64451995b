{"user": "alice", "argv": ["sbatch", "--parsable", "-A", "nosuchacct"], "returncode": 1}
