{"user": "alice", "argv": ["scancel", "999999"], "returncode": 0}
