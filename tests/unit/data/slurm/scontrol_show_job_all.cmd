{"user": "alice", "argv": ["scontrol", "--oneliner", "show", "job"], "returncode": 0}
