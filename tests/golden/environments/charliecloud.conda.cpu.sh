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
# --- environment: image library/python:3.11-slim, conda_file @REPO@/examples/environments/pip-requirements.yaml
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
# image library/python:3.11-slim: pulled and converted once into the site's image cache as a directory image (ch-image, ch-convert)
hpcjobs_image=/scratch/user/hpcjobs/.images/python_3.11-slim-029db888dedde714e018665f.ch
hpcjobs_image_fetch() {
    local tmp="$hpcjobs_image.tmp$$"
    rm -rf "$tmp"
    if command -v ch-image >/dev/null &&
        ch-image pull library/python:3.11-slim &&
        ch-convert -i ch-image -o dir library/python:3.11-slim "$tmp"; then
        mv -fT "$tmp" "$hpcjobs_image" && return 0
    fi
    rm -rf "$tmp"
    printf 'hpcjobs: %s\n' 'charliecloud needs ch-image (the full charliecloud package) to pull docker:// images; or convert the image elsewhere (ch-image pull + ch-convert to a .tar.gz) and set environment.image to that file'\''s path on the cluster'
    return 1
}
hpcjobs_once "$hpcjobs_image" 'pulling docker://library/python:3.11-slim into /scratch/user/hpcjobs/.images/python_3.11-slim-029db888dedde714e018665f.ch' hpcjobs_image_fetch || hpcjobs_finish 76
# charliecloud binds a host folder only onto a folder the image has: make the mount points
hpcjobs_ch_prepare() {
    local d f
    for d in /home/user/hpcjobs/envjob /datasets/mnist /home/user/hpcjobs/.envs /scratch /datastores/user; do
        [ -d "$hpcjobs_image$d" ] || mkdir -p "$hpcjobs_image$d" || return 1
    done
    for f in /etc/passwd /etc/group; do
        [ -e "$hpcjobs_image$f" ] || : >"$hpcjobs_image$f" || return 1
    done
}
if ! hpcjobs_ch_prepare; then
    printf 'hpcjobs: cannot create the mount points for the job folders in the image %s: it must be a directory you can write to (or let hpcjobs convert the image into the cache: give a .tar, .tar.gz or .sqfs file or a docker:// reference)\n' "$hpcjobs_image" >&2
    hpcjobs_finish 76
fi
# the image's own environment (/ch/environment, written by ch-image) over the job's
hpcjobs_ch_opts=()
if [ -f "$hpcjobs_image/ch/environment" ]; then
    hpcjobs_ch_opts+=(--set-env)
fi
# conda_file pip-requirements.yaml: a Python environment built once per content (key 01a2d177fb2644fda6401649)
# in the site's environment cache, inside the image (charliecloud); later jobs with the same file reuse it
hpcjobs_env=/home/user/hpcjobs/.envs/01a2d177fb2644fda6401649
hpcjobs_env_build() {
    local dir
    dir=$(mktemp -d "$hpcjobs_env.XXXXXX") || return 1
    chmod 755 "$dir" || return 1
    cat > "$dir/conda.yml" <<'HPCJOBS_ENV_EOF'
dependencies:
- python=3.11
- pip
- pip:
  - tabulate==0.9.0
HPCJOBS_ENV_EOF
    cat > "$dir/requirements.txt" <<'HPCJOBS_ENV_EOF'
tabulate==0.9.0
HPCJOBS_ENV_EOF
    cat > "$dir/build.sh" <<'HPCJOBS_ENV_EOF'
#!/bin/bash
# hpcjobs: build one Python environment of the site's environment cache.
#   build.sh DIR PUBLISHED PIP_ONLY PYTHON_VERSION PYTHON CONDA_PACKAGES
# DIR is the new entry (the environment goes to DIR/env); PUBLISHED is the name jobs use,
# a symlink to DIR that the caller makes once this succeeds.  With micromamba, mamba or
# conda on PATH the conda file is used as written; without them a file that asks only for
# python, pip and pip packages becomes a venv (python -m venv + pip).
set -u -o pipefail
dir=$1 published=$2 pip_only=$3 want=$4 python=$5 needs=$6
prefix="$dir/env"
echo "hpcjobs: building $published on $(uname -n) at $(date '+%F %T')"
tool=
for t in micromamba mamba conda; do
    if command -v "$t" >/dev/null 2>&1; then
        tool=$t
        break
    fi
done
if [ -n "$tool" ]; then
    echo "hpcjobs: with $tool ($(command -v "$tool"))"
    if [ "$tool" = micromamba ]; then
        micromamba create --yes --prefix "$prefix" --file "$dir/conda.yml" || exit 1
    else
        "$tool" env create --prefix "$prefix" --file "$dir/conda.yml" || exit 1
    fi
    kind=conda
elif [ "$pip_only" = 1 ]; then
    py=$python
    if [ -n "$want" ]; then
        if command -v "python$want" >/dev/null 2>&1; then
            py="python$want"
        else
            echo "hpcjobs: warning: the conda file asks for python $want, but python$want is not on PATH; using $("$python" -V 2>&1)"
        fi
    fi
    echo "hpcjobs: no conda here: python -m venv with $py ($("$py" -V 2>&1)), then pip"
    "$py" -m venv "$prefix" || exit 1
    if [ -s "$dir/requirements.txt" ]; then
        "$prefix/bin/python" -m pip install --no-input --disable-pip-version-check -r "$dir/requirements.txt" || exit 1
    fi
    kind=venv
else
    echo "hpcjobs: this conda file needs conda packages ($needs), but neither micromamba, mamba nor conda is on PATH"
    echo "hpcjobs: provide conda (a module in the site config's environment.modules, or an image that has it),"
    echo "hpcjobs: or list only python, pip and pip: packages (then a venv is built)"
    exit 1
fi
{
    echo "# hpcjobs: activate $published ($kind)"
    if [ "$kind" = venv ]; then
        printf 'export VIRTUAL_ENV=%q\n' "$published/env"
        echo 'export PATH="$VIRTUAL_ENV/bin${PATH:+:$PATH}"'
        echo 'unset PYTHONHOME'
    else
        printf 'export CONDA_PREFIX=%q CONDA_DEFAULT_ENV=%q\n' "$published/env" "$published/env"
        echo 'export PATH="$CONDA_PREFIX/bin${PATH:+:$PATH}"'
        echo 'for hpcjobs_f in "$CONDA_PREFIX"/etc/conda/activate.d/*.sh; do [ -r "$hpcjobs_f" ] && . "$hpcjobs_f"; done'
        echo 'unset hpcjobs_f'
    fi
    if [ -s "$dir/variables.sh" ]; then
        cat "$dir/variables.sh"
    fi
} > "$dir/activate.sh" || exit 1
{
    echo '#!/bin/bash'
    echo '# hpcjobs: run a command in this environment (the job command runs through this file)'
    echo '. "$(dirname "$0")/activate.sh" && exec "$@"'
} > "$dir/enter.sh" || exit 1
"$prefix/bin/python" -c 'import sys; print("hpcjobs: built: python", sys.version.split()[0], "in", sys.prefix)' || exit 1
HPCJOBS_ENV_EOF
    # built in a new folder, then published by renaming a symlink: a job never sees half an environment
    if ch-run "${hpcjobs_ch_opts[@]}" --bind=/home/user/hpcjobs/.envs --bind=/scratch --cd="$dir" "$hpcjobs_image" -- bash "$dir/build.sh" "$dir" "$hpcjobs_env" 1 3.11 python3 -; then
        ln -s "${dir##*/}" "$dir.link" && mv -fT "$dir.link" "$hpcjobs_env" && return 0
    fi
    rm -rf "$dir" "$dir.link"
    return 1
}
hpcjobs_once "$hpcjobs_env" 'building the Python environment /home/user/hpcjobs/.envs/01a2d177fb2644fda6401649 from pip-requirements.yaml' hpcjobs_env_build || hpcjobs_finish 77
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
ch-run "${hpcjobs_ch_opts[@]}" --bind=/home/user/hpcjobs/envjob --bind=/datasets/mnist --bind=/home/user/hpcjobs/.envs --bind=/scratch "${hpcjobs_binds[@]}" --cd="$HPCJOBS_WORK" "$hpcjobs_image" -- bash "$hpcjobs_env/enter.sh" bash "$HPCJOBS_STATE/command.sh"
rc=$?
hpcjobs_finish "$rc"
