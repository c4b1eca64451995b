{"user": "alice", "argv": ["bash", "-c", "<hpcjobs.onboard.DISCOVERY_SCRIPT>", "hpcjobs-discover", "%P|%a|%l|%D|%T|%c|%m|%G|%F|%N"], "returncode": 0}
