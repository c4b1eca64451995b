{"user": "alice", "argv": ["squeue", "--noheader", "--array", "--format=%i|%A|%F|%K|%T|%r|%N|%D|%M|%l|%S|%V|%u|%P|%j", "--states=all", "--me", "--jobs=999999"], "returncode": 1}
