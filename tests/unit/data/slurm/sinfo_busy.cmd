{"user": "alice", "argv": ["sinfo", "--noheader", "--format=%P|%a|%l|%D|%T|%c|%m|%G|%F|%N"], "returncode": 0}
