#!/usr/bin/env bash
# The whole test suite, on a fresh Debian 12 machine or a developer's one:
#   1. installs the Python package with its test extras,
#   2. installs and starts the test cluster (Slurm 22.05 with accounting, two nodes with
#      fake GPUs, user alice), the test sshd on 127.0.0.1:2222 (+ a bastion on :2201),
#   3. builds /opt/hpcjobs-venv so tests can run hpcjobs as alice,
#   4. runs ruff, mypy and pytest (unit + integration, 2 workers).
# Extra arguments go to pytest, e.g.  bash tests/run.sh -k hello  or  bash tests/run.sh tests/unit
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then exec sudo -E bash "$0" "$@"; fi
start=$(date +%s)
PY=${PYTHON:-python3}
log() { printf '[run.sh %4ss] %s\n' "$(( $(date +%s) - start ))" "$*"; }

log "python packages"
"$PY" -m pip install -q --disable-pip-version-check -e '.[test]' 2>&1 | grep -v -e 'Running pip as the' -e 'notice' -e 'WARNING: Location' || true

log "test cluster (Slurm, munge, slurmdbd, sshd)"
bash tests/cluster/up.sh

log "hpcjobs for alice (/opt/hpcjobs-venv)"
bash tests/cluster/alice-venv.sh

log "lint and types"
"$PY" -m ruff check hpcjobs tests benchmarks
"$PY" -m mypy

log "pytest"
set +e
# most integration tests wait on Slurm, sshd or sleep: 4 workers keep both cores busy
"$PY" -m pytest -n "${HPCJOBS_TEST_WORKERS:-4}" --dist loadgroup -p no:cacheprovider -p no:benchmark --durations=25 "${@:-tests}"
rc=$?
set -e
log "done (pytest exit $rc)"
exit $rc
