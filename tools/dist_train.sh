#!/usr/bin/env bash
# Multi-process training with torchrun (one process per GPU; on a CPU-only machine, per CPU worker).
#   tools/dist_train.sh CONFIG NPROC [train.py options...]
# Multi-node: the same command on every node with NNODES and MASTER_ADDR (the address of any one node,
# reachable from all) and the same PORT; no NODE_RANK is needed (the c10d rendezvous assigns ranks).
# MAX_RESTARTS (default 0): how often torchrun restarts the group when a process fails; a restarted group
# resumes from the newest checkpoint of the work dir (tools/train.py sees TORCHELASTIC_RESTART_COUNT).
set -euo pipefail
if [ $# -lt 2 ]; then
    echo "usage: $0 CONFIG NPROC [tools/train.py options]" >&2
    exit 2
fi
CONFIG=$1
NPROC=$2
NNODES=${NNODES:-1}
PORT=${PORT:-29500}
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
MAX_RESTARTS=${MAX_RESTARTS:-0}
RDZV_ID=${RDZV_ID:-vmamba-$PORT}
HERE=$(cd "$(dirname "$0")" && pwd)

# `python -m torch.distributed.run` is torchrun, run by the same interpreter as the tools. The c10d rendezvous
# (unlike the static --master_addr/--master_port form) lets a restarted group meet again.
PYTHONPATH="$HERE/..${PYTHONPATH:+:$PYTHONPATH}" \
${PYTHON:-python} -m torch.distributed.run \
    --nnodes="$NNODES" \
    --nproc_per_node="$NPROC" \
    --rdzv-backend=c10d \
    --rdzv-endpoint="$MASTER_ADDR:$PORT" \
    --rdzv-id="$RDZV_ID" \
    --max-restarts="$MAX_RESTARTS" \
    "$HERE/train.py" "$CONFIG" --launcher pytorch "${@:3}"
