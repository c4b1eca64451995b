{"user": "alice", "argv": ["sbatch", "--parsable", "/srv/hpcjobs/slurmrec/missing.sh"], "returncode": 1}
