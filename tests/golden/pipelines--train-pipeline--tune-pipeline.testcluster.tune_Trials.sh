#!/bin/bash
#SBATCH --job-name=golden_job_tune
#SBATCH --comment=hpcjobs:0000000000000000
#SBATCH --partition=debug
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --time=00:11:00
#SBATCH --output=@JOB_ROOT@/golden_job/steps/tune/user_logs/std_log_%a.txt
#SBATCH --open-mode=append
#SBATCH --array=0-2%2
# ---------------------------------------------------------------------------
# hpcjobs @VERSION@: pipeline job golden_job_tune
# Rendered from templates/job.sh.j2. Every value that came from YAML or the
# command line is quoted below; nothing from the user can add an #SBATCH line.
# ---------------------------------------------------------------------------
set -o pipefail
umask 0022
export HPCJOBS_JOB_NAME=golden_job_tune
export HPCJOBS_JOB_DIR=@JOB_ROOT@/golden_job/steps/tune
HPCJOBS_TASK_INDEX=$(( 0 + ${SLURM_ARRAY_TASK_ID:-${HPCJOBS_TASK_INDEX:-0}} ))
export HPCJOBS_TASK_INDEX
export HPCJOBS_TASK_DIR="$HPCJOBS_JOB_DIR/trials/$HPCJOBS_TASK_INDEX"
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
# code snapshot, available at the same relative paths as on Azure ML
if [ ! -e "$HPCJOBS_STATE/code_copied" ]; then
    cp -R @JOB_ROOT@/.snapshots/@DIGEST@/. "$HPCJOBS_WORK/" || hpcjobs_finish 71
    : > "$HPCJOBS_STATE/code_copied"
fi
# this task's parameters (trials.sh: one case per array index, values quoted)
# shellcheck source=/dev/null
if ! . @JOB_ROOT@/golden_job/steps/tune/trials.sh || [ -z "${HPCJOBS_TRIAL_FOUND:-}" ]; then
    echo "hpcjobs: no parameters for task $HPCJOBS_TASK_INDEX in $HPCJOBS_JOB_DIR/trials.sh" >&2
    hpcjobs_finish 74
fi
# environment: site defaults, then the job's environment_variables, then hpcjobs' own
# MLflow: attach this job to its run (sets MLFLOW_TRACKING_URI, MLFLOW_RUN_ID, MLFLOW_EXPERIMENT_ID)
if hpcjobs_mlflow_env=$(python3 @JOB_ROOT@/golden_job/.mlflow/hpcjobs_mlflow.py start @JOB_ROOT@/golden_job/steps/tune/.mlflow/tune_Trials.json); then eval "$hpcjobs_mlflow_env"; fi; unset hpcjobs_mlflow_env
export AZURE_ML_INPUT_training_data=@JOB_ROOT@/golden_job/steps/get_data/named-outputs/train_data
export AZURE_ML_INPUT_epochs=200
export AZUREML_PARAMETER_epochs=200
export AZURE_ML_OUTPUT_model=@JOB_ROOT@/golden_job/steps/tune/trials/"$HPCJOBS_TASK_INDEX"/named-outputs/model
mkdir -p @JOB_ROOT@/golden_job/steps/tune/trials/"$HPCJOBS_TASK_INDEX"/named-outputs/model
cd "$HPCJOBS_WORK" || hpcjobs_finish 73
# the user's command, written verbatim (expressions already turned into quoted variables)
cat > "$HPCJOBS_STATE/command.sh" <<'HPCJOBS_COMMAND_EOF'
python3 train.py --training_data "${AZURE_ML_INPUT_training_data}" --learning_rate "${AZUREML_SWEEP_learning_rate}" --epochs "${AZURE_ML_INPUT_epochs}"  --model "${AZURE_ML_OUTPUT_model}"
HPCJOBS_COMMAND_EOF
bash "$HPCJOBS_STATE/command.sh"
rc=$?
hpcjobs_finish "$rc"
