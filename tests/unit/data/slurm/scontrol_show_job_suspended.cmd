{"user": "alice", "argv": ["scontrol", "--oneliner", "show", "job", "13"], "returncode": 0}
