#!/usr/bin/env bash
# Training on a Slurm cluster: one task per GPU, started by srun.
#   tools/slurm_train.sh PARTITION JOB_NAME CONFIG WORK_DIR [train.py options...]
# Environment: GPUS (total, default 8), GPUS_PER_NODE (8), CPUS_PER_TASK (5), SRUN_ARGS (extra srun flags),
# SIGNAL_AHEAD (seconds before the time limit that Slurm sends SIGUSR1, default 120).
#
# Preemption and time limits: Slurm signals the tasks (SIGUSR1 ahead of the time limit, SIGTERM before a
# preemption); tools/train.py finishes its iteration, writes a checkpoint of it and exits with status 75.
# Inside an sbatch job this script then requeues the job (scontrol requeue), and the requeued run resumes
# from the newest checkpoint of WORK_DIR by itself (tools/train.py sees SLURM_RESTART_COUNT).
set -euo pipefail
if [ $# -lt 4 ]; then
    echo "usage: $0 PARTITION JOB_NAME CONFIG WORK_DIR [tools/train.py options]" >&2
    exit 2
fi
PARTITION=$1
JOB_NAME=$2
CONFIG=$3
WORK_DIR=$4
GPUS=${GPUS:-8}
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
CPUS_PER_TASK=${CPUS_PER_TASK:-5}
SRUN_ARGS=${SRUN_ARGS:-""}
SIGNAL_AHEAD=${SIGNAL_AHEAD:-120}
REQUEUE_EXIT=75  # tools/train.py: stopped by a signal after saving its checkpoint
HERE=$(cd "$(dirname "$0")" && pwd)

status=0
# shellcheck disable=SC2086  # SRUN_ARGS is a list of flags
PYTHONPATH="$HERE/..${PYTHONPATH:+:$PYTHONPATH}" \
srun -p "$PARTITION" \
    --job-name="$JOB_NAME" \
    --gres=gpu:"$GPUS_PER_NODE" \
    --ntasks="$GPUS" \
    --ntasks-per-node="$GPUS_PER_NODE" \
    --cpus-per-task="$CPUS_PER_TASK" \
    --kill-on-bad-exit=1 \
    --signal=USR1@"$SIGNAL_AHEAD" \
    $SRUN_ARGS \
    python -u "$HERE/train.py" "$CONFIG" --work-dir="$WORK_DIR" --launcher=slurm "${@:5}" || status=$?

if [ "$status" -eq "$REQUEUE_EXIT" ] && [ -n "${SLURM_JOB_ID:-}" ]; then
    echo "Training stopped with a checkpoint; requeueing job $SLURM_JOB_ID (it resumes from $WORK_DIR)." >&2
    scontrol requeue "$SLURM_JOB_ID"
fi
exit "$status"
