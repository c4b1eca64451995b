{"user": "alice", "argv": ["sbatch", "--parsable", "-A", "physics", "-p", "debug", "--qos=normal", "--constraint=nosuchfeature"], "returncode": 1}
