{"user": "alice", "argv": ["squeue", "--noheader", "--array", "--format=%i|%A|%F|%K|%T|%r|%N|%D|%M|%l|%S|%V|%u|%P|%j", "--states=all", "--me", "--name=rec-held2"], "returncode": 0}
