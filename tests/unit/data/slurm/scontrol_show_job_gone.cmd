{"user": "alice", "argv": ["scontrol", "--oneliner", "show", "job", "999999"], "returncode": 1}
