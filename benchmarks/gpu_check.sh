#!/usr/bin/env bash
# The GPU checks, as ONE command on a lent GPU machine (device tool, carry [".whl"]):
#   bash benchmarks/gpu_check.sh
# after `bash benchmarks/gpu_wheels.sh` here. About 5 minutes on an H100. Writes to $OUT:
#   device.txt, tests.txt (the flow/prior/training contract tests on CUDA),
#   flows-cuda.txt and flows-cpu.txt (python -m benchmarks.flows on the GPU and, as the
#   baseline measured on the same machine, its CPU).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu-check}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
if [ -d .whl ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site:.
else
    export PYTHONPATH=.
fi
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda,
torch.cuda.get_device_name())"; } 2>&1 | tee "$OUT/device.txt"
status=0
timeout 240 python3 -m pytest -q -p no:cacheprovider tests/test_flows.py tests/test_priors.py \
    tests/test_train.py::test_training_on_cuda_runs_there_or_is_a_clear_error \
    -k "cuda" 2>&1 | tee "$OUT/tests.txt" || status=1
timeout 180 python3 -m benchmarks.flows --device cuda 2>&1 | tee "$OUT/flows-cuda.txt" \
    || status=1
timeout 180 python3 -m benchmarks.flows --device cpu --batches 256 4096 --repeats 10 2>&1 \
    | tee "$OUT/flows-cpu.txt" || status=1
exit $status
