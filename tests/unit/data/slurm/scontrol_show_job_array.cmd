{"user": "alice", "argv": ["scontrol", "--oneliner", "show", "job", "11"], "returncode": 0}
