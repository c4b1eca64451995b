#!/usr/bin/env bash
# Stop the MLflow server started by mlflow-up.sh on ${MLFLOW_PORT:-5055}. Idempotent.
# The store and artifacts under $MLFLOW_ROOT are kept.
set -euo pipefail

PORT=${MLFLOW_PORT:-5055}
ROOT=${MLFLOW_ROOT:-/srv/hpcjobs-mlflow}
PID_FILE=$ROOT/mlflow-$PORT.pid

[[ -r $PID_FILE ]] || { echo "mlflow down (no pid file $PID_FILE)"; exit 0; }
pid=$(tr -dc '0-9' <"$PID_FILE")
if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; then
  # mlflow-up.sh started the server with setsid, so its pid is also its process group: stopping
  # the group also stops the uvicorn/gunicorn workers it spawned.
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 100); do
    kill -0 -- "-$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 -- "-$pid" 2>/dev/null; then
    echo "mlflow-down.sh: process group $pid ignored SIGTERM; killing it" >&2
    kill -KILL -- "-$pid" 2>/dev/null || true
  fi
fi
rm -f "$PID_FILE"
echo "mlflow down (port $PORT)"
