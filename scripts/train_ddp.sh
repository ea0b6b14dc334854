#!/usr/bin/env bash
# Data-parallel training with torchrun: one process per GPU (or per CPU slot).
#   bash scripts/train_ddp.sh 8                       # 8 processes on this machine
#   bash scripts/train_ddp.sh 2 --version huggingface # extra flags go to main.py
# Several machines: run this on each with NNODES, NODE_RANK, MASTER_ADDR and MASTER_PORT set,
#   NNODES=2 NODE_RANK=0 MASTER_ADDR=10.0.0.1 MASTER_PORT=29500 bash scripts/train_ddp.sh 8
# --batch_size is per process: the global batch is batch_size x processes x accumulation steps.
set -euo pipefail
cd "$(dirname "$0")/.."
NPROC="${1:-2}"
[ $# -gt 0 ] && shift
if [ -x transformer_env/bin/python ]; then source transformer_env/bin/activate; fi
# on the CPU, give each process its share of the cores instead of every process all of them
if ! python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  export OMP_NUM_THREADS="${OMP_NUM_THREADS:-$(( $(nproc) / NPROC > 0 ? $(nproc) / NPROC : 1 ))}"
fi
exec torchrun \
  --nnodes="${NNODES:-1}" --node_rank="${NODE_RANK:-0}" --nproc_per_node="$NPROC" \
  --master_addr="${MASTER_ADDR:-127.0.0.1}" --master_port="${MASTER_PORT:-29500}" \
  main.py --version pytorch "$@"
