# hpcjobs sweep golden_job_tune: each trial's parameters by index (sourced by the job script).
# Every value is quoted with hpcjobs.shellquote.shq: it reaches the trial byte for byte.
case "$HPCJOBS_TASK_INDEX" in
0) export AZUREML_SWEEP_learning_rate=0.01; HPCJOBS_TRIAL_FOUND=1;;
1) export AZUREML_SWEEP_learning_rate=0.1; HPCJOBS_TRIAL_FOUND=1;;
2) export AZUREML_SWEEP_learning_rate=1.0; HPCJOBS_TRIAL_FOUND=1;;
esac
# the trial component's inputs that the hyperparameters of the same name feed
[ -n "${AZUREML_SWEEP_learning_rate+set}" ] && export AZURE_ML_INPUT_learning_rate="$AZUREML_SWEEP_learning_rate" AZUREML_PARAMETER_learning_rate="$AZUREML_SWEEP_learning_rate"
[ -n "${HPCJOBS_TRIAL_FOUND:-}" ] && . "$HPCJOBS_JOB_DIR/.hpcjobs/sweep_task.sh"
