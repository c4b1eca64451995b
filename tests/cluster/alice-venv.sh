#!/usr/bin/env bash
# A virtualenv with hpcjobs (and mlflow) that the test user alice can run: the tests run
# `runuser -u alice -- /opt/hpcjobs-venv/bin/hpcjobs ...` to submit jobs as a real,
# non-root user.  Rebuilt when the checkout's sources change (hash of hpcjobs/ + pyproject).
set -euo pipefail
cd "$(dirname "$0")/../.."
VENV=/opt/hpcjobs-venv
stamp=$( (cat pyproject.toml; find hpcjobs templates site-configs -type f -name '*.*' ! -name '*.pyc' -print0 | sort -z | xargs -0 cat) | sha256sum | cut -c1-16)
if [ -f "$VENV/.stamp" ] && [ "$(cat "$VENV/.stamp")" = "$stamp" ]; then
  exit 0
fi
if [ ! -x "$VENV/bin/python" ]; then
  /usr/bin/python3 -m venv "$VENV"
fi
# system python (readable by everyone); the root pyenv lives under /root (mode 700)
"$VENV/bin/pip" install -q --disable-pip-version-check . 'mlflow>=2.10' 2>&1 | grep -v -e 'notice' -e 'WARNING: Location' || true
echo "$stamp" > "$VENV/.stamp"
chmod -R a+rX "$VENV"
