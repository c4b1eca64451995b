{"user": "alice", "argv": ["scancel", "12"], "returncode": 0}
