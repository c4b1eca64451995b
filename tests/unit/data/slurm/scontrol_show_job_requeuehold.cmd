{"user": "alice", "argv": ["scontrol", "--oneliner", "show", "job", "14"], "returncode": 0}
