#!/bin/bash
# ---------------------------------------------------------------------------
# hpcjobs @VERSION@: pipeline job golden_job_tune
# Rendered from templates/job.sh.j2. Every value that came from YAML or the
# command line is quoted below; nothing from the user can add an #SBATCH line.
# ---------------------------------------------------------------------------
set -o pipefail
umask 0022
export HPCJOBS_JOB_NAME=golden_job_tune
export HPCJOBS_JOB_DIR=@JOB_ROOT@/golden_job/steps/tune
export HPCJOBS_TASK_DIR="$HPCJOBS_JOB_DIR"
export HPCJOBS_STATE="$HPCJOBS_TASK_DIR/.hpcjobs"
export HPCJOBS_WORK="$HPCJOBS_TASK_DIR/wd"
mkdir -p "$HPCJOBS_STATE" "$HPCJOBS_WORK/outputs" "$HPCJOBS_WORK/logs" || exit 70
date +%s > "$HPCJOBS_STATE/started"
hpcjobs_finish() {
    local rc=$1
    # ended first: whoever sees exit_code can rely on ended being there
    date +%s > "$HPCJOBS_STATE/ended"
    printf '%s\n' "$rc" > "$HPCJOBS_STATE/exit_code.tmp" && mv -f "$HPCJOBS_STATE/exit_code.tmp" "$HPCJOBS_STATE/exit_code"
    exit "$rc"
}
trap 'hpcjobs_finish 143' TERM
trap 'hpcjobs_finish 130' INT
# environment: site defaults, then the job's environment_variables, then hpcjobs' own
cd "$HPCJOBS_WORK" || hpcjobs_finish 73
# the user's command, written verbatim (expressions already turned into quoted variables)
cat > "$HPCJOBS_STATE/command.sh" <<'HPCJOBS_COMMAND_EOF'
PYTHONPATH=@JOB_ROOT@/golden_job/steps/tune/.hpcjobs/lib${PYTHONPATH:+:$PYTHONPATH} exec @PYTHON@ -m hpcjobs.sweep.controller finalize "$HPCJOBS_JOB_DIR" "$HPCJOBS_STATE"
HPCJOBS_COMMAND_EOF
bash "$HPCJOBS_STATE/command.sh"
rc=$?
hpcjobs_finish "$rc"
