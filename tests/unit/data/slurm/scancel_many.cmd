{"user": "alice", "argv": ["scancel", "8", "9", "10", "14", "28", "29", "30"], "returncode": 0}
