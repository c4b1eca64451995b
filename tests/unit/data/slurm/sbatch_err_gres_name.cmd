{"user": "alice", "argv": ["sbatch", "--parsable", "--gres=fpga:1"], "returncode": 1}
