#!/usr/bin/env bash
# Start a real MLflow tracking server for the tests on 127.0.0.1:${MLFLOW_PORT:-5055}.
# SQLite backend store; artifacts proxied by the server (--serve-artifacts) into a local directory.
# Idempotent: if the server is already answering on the port, only verifies it.
#
# Environment: MLFLOW_PORT (5055), PYTHON (python3), MLFLOW_ROOT (/srv/hpcjobs-mlflow),
#              MLFLOW_WAIT_INSTALL (seconds to wait for `import mlflow` to work, 600).
set -euo pipefail

PORT=${MLFLOW_PORT:-5055}
PY=${PYTHON:-python3}
ROOT=${MLFLOW_ROOT:-/srv/hpcjobs-mlflow}
LOG_DIR=/var/log/hpcjobs-test
PID_FILE=$ROOT/mlflow-$PORT.pid
URL=http://127.0.0.1:$PORT

T0=$(date +%s.%N)
elapsed() { awk -v a="$T0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }
health() { curl -sf --max-time 2 "$URL/health" >/dev/null 2>&1; }
die() {
  echo "mlflow-up.sh: ERROR: $*" >&2
  exit 1
}

# Both the store and the artifacts must be writable by the jobs' users (alice), hence 1777.
install -d -m 1777 "$ROOT" "$ROOT/artifacts"
if ! install -d -m 775 "$LOG_DIR" 2>/dev/null || [[ ! -w $LOG_DIR ]]; then
  LOG_DIR=$ROOT
fi
LOG=$LOG_DIR/mlflow-$PORT.log

pid=""
if [[ -r $PID_FILE ]]; then
  pid=$(tr -dc '0-9' <"$PID_FILE")
  if [[ -z $pid ]] || ! kill -0 "$pid" 2>/dev/null; then
    pid=""
    rm -f "$PID_FILE"
  fi
fi

if [[ -z $pid ]]; then
  if health; then
    die "something not started by this script already answers on $URL (choose another MLFLOW_PORT)"
  fi
  # pip may still be installing mlflow (the test runner installs it in the background).
  deadline=$((SECONDS + ${MLFLOW_WAIT_INSTALL:-600}))
  until version=$("$PY" -c 'import mlflow.server, mlflow; print(mlflow.__version__)' 2>/dev/null); do
    ((SECONDS < deadline)) || die "'$PY -c \"import mlflow.server\"' fails: pip install mlflow into $PY"
    sleep 2
  done
  echo "mlflow-up.sh: starting mlflow $version on $URL (log: $LOG)"
  # mlflow >= 3.5 also starts a job runner with seven huey consumers (~0.8 GB, for server-side
  # GenAI jobs the tests do not use); off unless the caller sets the variable.
  export MLFLOW_SERVER_ENABLE_JOB_EXECUTION=${MLFLOW_SERVER_ENABLE_JOB_EXECUTION:-false}
  # setsid: the server (and the uvicorn/gunicorn workers it spawns) get their own process group,
  # which mlflow-down.sh stops as a whole, and they outlive this script.
  (
    cd "$ROOT"
    exec setsid "$PY" -m mlflow server --host 127.0.0.1 --port "$PORT" --workers 1 \
      --backend-store-uri "sqlite:///$ROOT/mlflow.db" \
      --serve-artifacts --artifacts-destination "$ROOT/artifacts"
  ) </dev/null >>"$LOG" 2>&1 &
  pid=$!
  echo "$pid" >"$PID_FILE"
fi

deadline=$((SECONDS + 180))
until health; do
  if ! kill -0 "$pid" 2>/dev/null; then
    rm -f "$PID_FILE"
    die "mlflow server exited; last lines of $LOG:
$(tail -n 20 "$LOG")"
  fi
  ((SECONDS < deadline)) || die "mlflow server (pid $pid) did not answer $URL/health within 180 s; see $LOG"
  sleep 0.3
done
echo "mlflow up on $URL (pid $pid, store $ROOT/mlflow.db, artifacts $ROOT/artifacts) in $(elapsed)s"
