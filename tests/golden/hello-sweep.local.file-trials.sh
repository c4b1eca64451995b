# hpcjobs sweep golden_job: each trial's parameters by index (sourced by the job script).
# Every value is quoted with hpcjobs.shellquote.shq: it reaches the trial byte for byte.
case "$HPCJOBS_TASK_INDEX" in
0) export AZUREML_SWEEP_lr=0.001 AZUREML_SWEEP_layers=1; HPCJOBS_TRIAL_FOUND=1;;
1) export AZUREML_SWEEP_lr=0.001 AZUREML_SWEEP_layers=2; HPCJOBS_TRIAL_FOUND=1;;
2) export AZUREML_SWEEP_lr=0.01 AZUREML_SWEEP_layers=1; HPCJOBS_TRIAL_FOUND=1;;
3) export AZUREML_SWEEP_lr=0.01 AZUREML_SWEEP_layers=2; HPCJOBS_TRIAL_FOUND=1;;
4) export AZUREML_SWEEP_lr=0.1 AZUREML_SWEEP_layers=1; HPCJOBS_TRIAL_FOUND=1;;
5) export AZUREML_SWEEP_lr=0.1 AZUREML_SWEEP_layers=2; HPCJOBS_TRIAL_FOUND=1;;
esac
[ -n "${HPCJOBS_TRIAL_FOUND:-}" ] && . "$HPCJOBS_JOB_DIR/.hpcjobs/sweep_task.sh"
