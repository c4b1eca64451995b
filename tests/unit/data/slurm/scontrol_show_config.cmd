{"user": "alice", "argv": ["scontrol", "show", "config"], "returncode": 0}
