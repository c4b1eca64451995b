#!/bin/bash
#SBATCH --job-name=envjob
#SBATCH --comment=hpcjobs:0000000000000000
#SBATCH --partition=cpu
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
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
module load singularity
# --- environment: image /software/images/pytorch.sif
# image /software/images/pytorch.sif: used where it is (an image file)
hpcjobs_image=/software/images/pytorch.sif
if [ ! -e "$hpcjobs_image" ]; then
    printf 'hpcjobs: the image %s does not exist on %s\n' /software/images/pytorch.sif "$(uname -n)" >&2
    hpcjobs_finish 76
fi
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
singularity exec --bind=/home/user/hpcjobs/envjob --bind=/datasets/mnist --bind=/scratch --bind=/projects "${hpcjobs_binds[@]}" --pwd="$HPCJOBS_WORK" "$hpcjobs_image" bash "$HPCJOBS_STATE/command.sh"
rc=$?
hpcjobs_finish "$rc"
