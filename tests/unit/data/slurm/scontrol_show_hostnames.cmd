{"user": "alice", "argv": ["scontrol", "show", "hostnames", "node[1-2],login[01-03,7],gpu-a"], "returncode": 0}
