#!/bin/bash
#SBATCH --job-name=golden_job
#SBATCH --comment=hpcjobs:0000000000000000
#SBATCH --partition=debug
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=2
#SBATCH --time=00:30:00
#SBATCH --output=@JOB_ROOT@/golden_job/user_logs/std_log.txt
#SBATCH --open-mode=append
# ---------------------------------------------------------------------------
# hpcjobs @VERSION@: command job golden_job
# Rendered from templates/job.sh.j2. Every value that came from YAML or the
# command line is quoted below; nothing from the user can add an #SBATCH line.
# ---------------------------------------------------------------------------
set -o pipefail
umask 0022
export HPCJOBS_JOB_NAME=golden_job
export HPCJOBS_JOB_DIR=@JOB_ROOT@/golden_job
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
# code snapshot, available at the same relative paths as on Azure ML
if [ ! -e "$HPCJOBS_STATE/code_copied" ]; then
    cp -R @JOB_ROOT@/.snapshots/@DIGEST@/. "$HPCJOBS_WORK/" || hpcjobs_finish 71
    : > "$HPCJOBS_STATE/code_copied"
fi
# environment: site defaults, then the job's environment_variables, then hpcjobs' own
# MLflow: attach this job to its run (sets MLFLOW_TRACKING_URI, MLFLOW_RUN_ID, MLFLOW_EXPERIMENT_ID)
if hpcjobs_mlflow_env=$(python3 @JOB_ROOT@/golden_job/.mlflow/hpcjobs_mlflow.py start @JOB_ROOT@/golden_job/.mlflow/main.json); then eval "$hpcjobs_mlflow_env"; fi; unset hpcjobs_mlflow_env
# distributed pytorch: 4 processes on 2 node(s), each one a rank started through
# $HPCJOBS_STATE/rank.sh (templates/parts/distributed_rank.sh.j2; docs/distributed.md)
cat > "$HPCJOBS_STATE/rank.sh" <<'HPCJOBS_RANK_EOF'
#!/bin/bash
# hpcjobs: one rank of a pytorch job, started by srun.
# It sets what Azure ML sets for pytorch (docs/distributed.md), keeps the rank's output in
# logs/rank_N.txt (rank 0, or the ranks named in HPCJOBS_STREAM_RANKS, also go to the job's
# log), and when it fails first it says so in $HPCJOBS_STATE/ranks/first, for the job's exit code.
rank=$SLURM_PROCID
local_rank=$SLURM_LOCALID
node_rank=$SLURM_NODEID
world=$SLURM_STEP_NUM_TASKS
tasks_per_node=$SLURM_STEP_TASKS_PER_NODE
node=$SLURMD_NODENAME
# ten ports per job, from its id: jobs whose ids differ mod 1000 never share one
port_base=${HPCJOBS_PORT_BASE:-$(( 20000 + SLURM_JOB_ID % 1000 * 10 ))}
# tasks per node in node order, from Slurm's compact form ("2(x3),1" -> 2 2 2 1)
counts=()
IFS=, read -r -a parts <<< "$tasks_per_node"
for part in "${parts[@]}"; do
    if [[ $part =~ ^([0-9]+)\(x([0-9]+)\)$ ]]; then
        for ((i = 0; i < BASH_REMATCH[2]; i++)); do
            counts+=("${BASH_REMATCH[1]}")
        done
    else
        counts+=("$part")
    fi
done
local_world=${counts[$node_rank]:-1}
export HPCJOBS_RANK="$rank"
# what Azure ML sets for distribution type pytorch (torch.distributed's env:// init reads them)
export MASTER_ADDR="$HPCJOBS_MASTER_ADDR" MASTER_PORT="$port_base"
export WORLD_SIZE="$world" RANK="$rank" LOCAL_RANK="$local_rank" NODE_RANK="$node_rank" LOCAL_WORLD_SIZE="$local_world"
# the output is a pipe or a file: without this Python would hold it back until it exits
export PYTHONUNBUFFERED="${PYTHONUNBUFFERED:-1}"
log="$HPCJOBS_WORK/logs/rank_$rank.txt"
stream=
case ",${HPCJOBS_STREAM_RANKS:-0}," in
    *,all,* | *",$rank,"*) stream=1 ;;
esac
if [ -z "$stream" ]; then
    "$@" >> "$log" 2>&1
    rc=$?
elif [ "$rank" = 0 ]; then
    "$@" 2>&1 | tee -a "$log"
    rc=${PIPESTATUS[0]}
else
    "$@" 2>&1 | tee -a "$log" | sed -u "s/^/[rank $rank] /"
    rc=${PIPESTATUS[0]}
fi
if [ "$rc" != 0 ]; then
    # mkdir is atomic (NFS included): only the first rank to fail claims the job's failure
    if mkdir "$HPCJOBS_STATE/ranks/first" 2>/dev/null; then
        printf '%s %s %s\n' "$rc" "$rank" "$node" > "$HPCJOBS_STATE/ranks/first/rank"
    fi
    printf 'hpcjobs: rank %s on %s exited with code %s (its output: logs/rank_%s.txt)\n' "$rank" "$node" "$rc" "$rank" >&2
    if [ -z "$stream" ]; then
        tail -n 20 "$log" | sed "s/^/[rank $rank] /" >&2
    fi
fi
exit "$rc"
HPCJOBS_RANK_EOF
rm -rf "$HPCJOBS_STATE/ranks"
mkdir -p "$HPCJOBS_STATE/ranks" "$HPCJOBS_WORK/logs" || hpcjobs_finish 70
# rank 0 runs on the allocation's first node: srun --distribution=block fills it first
HPCJOBS_HOSTS=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | tr '\n' ' ')
HPCJOBS_MASTER_ADDR=${HPCJOBS_HOSTS%% *}
export HPCJOBS_HOSTS HPCJOBS_MASTER_ADDR
# the rank that failed first is the job's failure: its exit code, not the 143 of the ranks
# stopped because of it (srun --kill-on-bad-exit)
eval "hpcjobs_finish_ranks() $(declare -f hpcjobs_finish | sed 1d)"
hpcjobs_finish() {
    local rc=$1 first_rc first_rank first_node
    if [ "$rc" != 0 ] && read -r first_rc first_rank first_node < "$HPCJOBS_STATE/ranks/first/rank" 2>/dev/null; then
        printf 'hpcjobs: rank %s (on %s) failed first, with exit code %s; its output is in logs/rank_%s.txt\n' \
            "$first_rank" "$first_node" "$first_rc" "$first_rank" >&2
        rc=$first_rc
    fi
    hpcjobs_finish_ranks "$rc"
}
export AZURE_ML_INPUT_epochs=2
export AZUREML_PARAMETER_epochs=2
export AZURE_ML_INPUT_batch_size=64
export AZUREML_PARAMETER_batch_size=64
export AZURE_ML_INPUT_samples=2048
export AZUREML_PARAMETER_samples=2048
cd "$HPCJOBS_WORK" || hpcjobs_finish 73
# the user's command, written verbatim (expressions already turned into quoted variables)
cat > "$HPCJOBS_STATE/command.sh" <<'HPCJOBS_COMMAND_EOF'
python train.py --epochs "${AZURE_ML_INPUT_epochs}" --batch-size "${AZURE_ML_INPUT_batch_size}" --samples "${AZURE_ML_INPUT_samples}"
HPCJOBS_COMMAND_EOF
srun --nodes=2 --ntasks=4 --ntasks-per-node=2 --distribution=block --kill-on-bad-exit=1 ${SLURM_CPUS_PER_TASK:+--cpus-per-task="$SLURM_CPUS_PER_TASK"} bash "$HPCJOBS_STATE/rank.sh" bash "$HPCJOBS_STATE/command.sh"
rc=$?
hpcjobs_finish "$rc"
