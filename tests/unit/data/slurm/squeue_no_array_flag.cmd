{"user": "alice", "argv": ["squeue", "--noheader", "--format=%i|%A|%F|%K|%T|%r|%N|%D|%M|%l|%S|%V|%u|%P|%j", "--me"], "returncode": 0}
