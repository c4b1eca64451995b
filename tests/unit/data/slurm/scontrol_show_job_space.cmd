{"user": "alice", "argv": ["scontrol", "--oneliner", "show", "job", "16"], "returncode": 0}
