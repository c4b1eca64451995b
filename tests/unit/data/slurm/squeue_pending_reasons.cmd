{"user": "alice", "argv": ["squeue", "--noheader", "--array", "--format=%i|%A|%F|%K|%T|%r|%N|%D|%M|%l|%S|%V|%u|%P|%j", "--states=all", "--me", "--jobs=27,28,29,30,32,8,9,10,14"], "returncode": 0}
