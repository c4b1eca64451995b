#!/bin/bash
#SBATCH --job-name=envjob
#SBATCH --comment=hpcjobs:0000000000000000
#SBATCH --partition=gpu
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --gres=gpu:2
#SBATCH --output=/home/user/hpcjobs/envjob/user_logs/std_log.txt
#SBATCH --open-mode=append
# ---------------------------------------------------------------------------
# hpcjobs 0.1.0: command job envjob
# Rendered from templates/job.sh.j2. Every value that came from YAML or the
# command line is quoted below; nothing from the user can add an #SBATCH line.
# ---------------------------------------------------------------------------
set -o pipefail
umask 0022
export HPCJOBS_JOB_NAME=envjob
export HPCJOBS_JOB_DIR=/home/user/hpcjobs/envjob
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
module load apptainer
# --- environment: image library/python:3.11-slim
# hpcjobs_once TARGET WHAT FUNCTION: make TARGET once for every task and job that needs it.
# The first caller runs FUNCTION under a lock (flock on TARGET.lock) while the others wait
# and then reuse TARGET; FUNCTION's output goes to TARGET.log, shown when it fails.
hpcjobs_once() {
    local target=$1 what=$2 seen rc
    shift 2
    [ -e "$target" ] && return 0
    mkdir -p "$(dirname "$target")" || return 1
    seen=$(cat "$target.failed" 2>/dev/null)
    (
        if command -v flock >/dev/null 2>&1; then
            flock 9 || exit 1
        fi
        [ -e "$target" ] && exit 0
        # a failure while this task waited is reported, not retried by every waiting task
        if [ -s "$target.failed" ] && [ "$(cat "$target.failed")" != "$seen" ]; then
            exit 1
        fi
        printf 'hpcjobs: %s (on %s, log: %s)\n' "$what" "$(uname -n)" "$target.log" >&2
        if "$@" >"$target.log" 2>&1; then
            rm -f "$target.failed"
            exit 0
        fi
        printf '%s %s %s\n' "$(uname -n)" "$$" "$(date +%s%N)" >"$target.failed"
        exit 1
    ) 9>>"$target.lock"
    rc=$?
    if [ "$rc" = 0 ] && [ -e "$target" ]; then
        return 0
    fi
    printf 'hpcjobs: %s failed; the end of %s:\n' "$what" "$target.log" >&2
    tail -n 30 "$target.log" >&2
    return 1
}
# image library/python:3.11-slim: pulled once into the site's image cache as a SIF (apptainer pull)
hpcjobs_image=/scratch/user/hpcjobs/.images/python_3.11-slim-7d02e7c3dca5fbcb3a47e12b.sif
hpcjobs_image_fetch() {
    local tmp="$hpcjobs_image.tmp$$"
    rm -rf "$tmp"
    if apptainer pull "$tmp" docker://library/python:3.11-slim; then
        mv -fT "$tmp" "$hpcjobs_image" && return 0
    fi
    rm -rf "$tmp"
    return 1
}
hpcjobs_once "$hpcjobs_image" 'pulling docker://library/python:3.11-slim into /scratch/user/hpcjobs/.images/python_3.11-slim-7d02e7c3dca5fbcb3a47e12b.sif' hpcjobs_image_fetch || hpcjobs_finish 76
# the site's datastores, bound when they exist on this node
hpcjobs_binds=()
for hpcjobs_d in /datastores/user; do
    [ -d "$hpcjobs_d" ] && hpcjobs_binds+=("--bind=$hpcjobs_d")
done
export GREETING='hello world'
export AZURE_ML_INPUT_data=/datasets/mnist
export AZURE_ML_OUTPUT_model=/home/user/hpcjobs/envjob/named-outputs/model
mkdir -p /home/user/hpcjobs/envjob/named-outputs/model
cd "$HPCJOBS_WORK" || hpcjobs_finish 73
# the user's command, written verbatim (expressions already turned into quoted variables)
cat > "$HPCJOBS_STATE/command.sh" <<'HPCJOBS_COMMAND_EOF'
python train.py --data "${AZURE_ML_INPUT_data}" --out "${AZURE_ML_OUTPUT_model}"
HPCJOBS_COMMAND_EOF
apptainer exec --nv --bind=/home/user/hpcjobs/envjob --bind=/datasets/mnist --bind=/scratch --bind=/projects "${hpcjobs_binds[@]}" --pwd="$HPCJOBS_WORK" "$hpcjobs_image" bash "$HPCJOBS_STATE/command.sh"
rc=$?
hpcjobs_finish "$rc"
