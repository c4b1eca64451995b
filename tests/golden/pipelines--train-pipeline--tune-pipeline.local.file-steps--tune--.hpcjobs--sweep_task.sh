# ---------------------------------------------------------------------------
# hpcjobs @VERSION@: sweep golden_job_tune, what every trial does once it has its
# parameters.  Sourced by the job script through trials.sh; rendered from
# templates/sweep_task.sh.j2 (docs/sweeps.md explains the design).
# ---------------------------------------------------------------------------
# the trial's controller helper: the site's python with the shipped hpcjobs modules
# (the site's environment setup first, its output kept off stdout)
hpcjobs_sweep_py() {
    (
        {
        :
        } >&2
        PYTHONPATH=@JOB_ROOT@/golden_job/steps/tune/.hpcjobs/lib${PYTHONPATH:+:$PYTHONPATH} exec @PYTHON@ -m hpcjobs.sweep.controller "$@"
    )
}
printf '%s\n' "$$" > "$HPCJOBS_STATE/pid"
if [ -n "${SLURM_JOB_ID:-}" ]; then
    # ARRAYID_TASKID: scancel refuses an array task's own job id once it is split out
    printf '%s\n' "${SLURM_ARRAY_JOB_ID:+${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}}" > "$HPCJOBS_STATE/slurm_job_id"
    [ -s "$HPCJOBS_STATE/slurm_job_id" ] || printf '%s\n' "$SLURM_JOB_ID" > "$HPCJOBS_STATE/slurm_job_id"
    # a later chunk of a long sweep numbers its array tasks from 0 again: this trial's
    # output belongs in the log named after its trial index
    if [ "${SLURM_ARRAY_TASK_ID:-$HPCJOBS_TASK_INDEX}" != "$HPCJOBS_TASK_INDEX" ]; then
        exec >>"$HPCJOBS_JOB_DIR/user_logs/std_log_$HPCJOBS_TASK_INDEX.txt" 2>&1
    fi
fi
hpcjobs_watch_pid=
hpcjobs_watch_stop() {
    if [ -n "$hpcjobs_watch_pid" ]; then
        kill "$hpcjobs_watch_pid" 2>/dev/null
        hpcjobs_watch_pid=
    fi
}
# The job script's hpcjobs_finish, extended: record the outcome for the sweep, and a
# trial stopped by the sweep (early termination, a timeout) ends as cancelled.
eval "hpcjobs_finish_trial() $(declare -f hpcjobs_finish | sed 1d)"
hpcjobs_finish() {
    hpcjobs_watch_stop
    hpcjobs_sweep_py record "$HPCJOBS_JOB_DIR" "$HPCJOBS_TASK_INDEX" "$1" </dev/null >/dev/null 2>&1
    if [ "$1" != 0 ] && [ -s "$HPCJOBS_STATE/stop_reason" ]; then
        cp -f "$HPCJOBS_STATE/stop_reason" "$HPCJOBS_STATE/canceled"
        date +%s > "$HPCJOBS_STATE/ended"
        exit "$1"
    fi
    hpcjobs_finish_trial "$@"
}
if [ -e "$HPCJOBS_JOB_DIR/.hpcjobs/sweep_stopped" ]; then
    # the sweep was stopped before this trial could start: it does not run (and on
    # Slurm it cancels itself, so that accounting says CANCELLED rather than FAILED)
    cp -f "$HPCJOBS_JOB_DIR/.hpcjobs/sweep_stopped" "$HPCJOBS_STATE/stop_reason"
    [ -n "${SLURM_JOB_ID:-}" ] && scancel "$(cat "$HPCJOBS_STATE/slurm_job_id")" 2>/dev/null
    hpcjobs_finish 143
fi
# timeouts and early termination, beside the trial (hpcjobs.sweep.controller watch)
hpcjobs_sweep_py watch "$HPCJOBS_JOB_DIR" "$HPCJOBS_TASK_INDEX" "$$" </dev/null &
hpcjobs_watch_pid=$!
:
