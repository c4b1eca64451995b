#!/bin/bash
#SBATCH --job-name=golden_job_get_data
#SBATCH --comment=hpcjobs:0000000000000000
#SBATCH --partition=debug
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --time=00:30:00
#SBATCH --output=@JOB_ROOT@/golden_job/steps/get_data/user_logs/std_log.txt
#SBATCH --open-mode=append
# ---------------------------------------------------------------------------
# hpcjobs @VERSION@: pipeline job golden_job_get_data
# Rendered from templates/job.sh.j2. Every value that came from YAML or the
# command line is quoted below; nothing from the user can add an #SBATCH line.
# ---------------------------------------------------------------------------
set -o pipefail
umask 0022
export HPCJOBS_JOB_NAME=golden_job_get_data
export HPCJOBS_JOB_DIR=@JOB_ROOT@/golden_job/steps/get_data
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
    if [ "$rc" != 0 ] && [ "$rc" != 143 ] && [ "$rc" != 130 ]; then
        # continue_on_step_failure: false -- this failure stops the whole pipeline
        trap '' TERM INT
        printf 'hpcjobs: step %s failed (exit %s) and continue_on_step_failure is false: canceling the other steps\n' "${HPCJOBS_JOB_DIR##*/}" "$rc" >&2
        if [ -n "${SLURM_JOB_ID:-}" ]; then
            hpcjobs_tag=$(squeue -h -j "$SLURM_JOB_ID" -o %k 2>/dev/null)
            if [ -n "$hpcjobs_tag" ]; then
                hpcjobs_spare=''
                squeue --me -h -o '%A|%k|%j' 2>/dev/null | while IFS='|' read -r hpcjobs_id hpcjobs_com hpcjobs_jname; do
                    if [ "$hpcjobs_com" = "$hpcjobs_tag" ] && [ "$hpcjobs_id" != "$SLURM_JOB_ID" ] && [ "$hpcjobs_jname" != "$hpcjobs_spare" ]; then
                        printf '%s\n' "$hpcjobs_id"
                    fi
                done | xargs -r scancel 2>/dev/null
            fi
        elif grep -qa hpcjobs.localrun "/proc/$PPID/cmdline" 2>/dev/null; then
            hpcjobs_spare_sd="${HPCJOBS_JOB_DIR%/*}"/''/.hpcjobs
            for hpcjobs_sd in "${HPCJOBS_JOB_DIR%/*}"/*/.hpcjobs; do
                if [ "$hpcjobs_sd" != "$HPCJOBS_STATE" ] && [ "$hpcjobs_sd" != "$hpcjobs_spare_sd" ] && [ -d "$hpcjobs_sd" ] && [ ! -e "$hpcjobs_sd/exit_code" ]; then
                    printf 'canceled: step %s failed and continue_on_step_failure is false\n' "${HPCJOBS_JOB_DIR##*/}" > "$hpcjobs_sd/canceled"
                fi
            done
            # USR1: the runner stops every other step, then runs the on_finalize step
            kill -USR1 "$PPID" 2>/dev/null
        fi
    fi
    exit "$rc"
}
trap 'hpcjobs_finish 143' TERM
trap 'hpcjobs_finish 130' INT
# code snapshot, available at the same relative paths as on Azure ML
if [ ! -e "$HPCJOBS_STATE/code_copied" ]; then
    cp -R @JOB_ROOT@/.snapshots/@DIGEST@/. "$HPCJOBS_WORK/" || hpcjobs_finish 71
    : > "$HPCJOBS_STATE/code_copied"
fi
# environment: site defaults, then the job's environment_variables, then hpcjobs' own
# MLflow: attach this job to its run (sets MLFLOW_TRACKING_URI, MLFLOW_RUN_ID, MLFLOW_EXPERIMENT_ID)
if hpcjobs_mlflow_env=$(python3 @JOB_ROOT@/golden_job/.mlflow/hpcjobs_mlflow.py start @JOB_ROOT@/golden_job/steps/get_data/.mlflow/get_data.json); then eval "$hpcjobs_mlflow_env"; fi; unset hpcjobs_mlflow_env
export AZURE_ML_INPUT_n_samples=400
export AZUREML_PARAMETER_n_samples=400
export AZURE_ML_INPUT_seed=0
export AZUREML_PARAMETER_seed=0
export AZURE_ML_INPUT_test_fraction=0.25
export AZUREML_PARAMETER_test_fraction=0.25
export AZURE_ML_OUTPUT_train_data=@JOB_ROOT@/golden_job/steps/get_data/named-outputs/train_data
export AZURE_ML_OUTPUT_test_data=@JOB_ROOT@/golden_job/steps/get_data/named-outputs/test_data
mkdir -p @JOB_ROOT@/golden_job/steps/get_data/named-outputs/train_data
mkdir -p @JOB_ROOT@/golden_job/steps/get_data/named-outputs/test_data
cd "$HPCJOBS_WORK" || hpcjobs_finish 73
# the user's command, written verbatim (expressions already turned into quoted variables)
cat > "$HPCJOBS_STATE/command.sh" <<'HPCJOBS_COMMAND_EOF'
python3 get_data.py --n_samples "${AZURE_ML_INPUT_n_samples}" --seed "${AZURE_ML_INPUT_seed}" --test_fraction "${AZURE_ML_INPUT_test_fraction}" --train_data "${AZURE_ML_OUTPUT_train_data}" --test_data "${AZURE_ML_OUTPUT_test_data}"
HPCJOBS_COMMAND_EOF
bash "$HPCJOBS_STATE/command.sh"
rc=$?
hpcjobs_finish "$rc"
