#!/usr/bin/env bash
# The GPU checks, as ONE command on a lent GPU machine (device tool, carry [".whl"]):
#   bash benchmarks/gpu_check.sh [sweep] [tests] [flows]      (no argument: all three)
# after `bash benchmarks/gpu_wheels.sh` here. About 6 minutes on an H200. Writes to $OUT:
#   device.txt; sweep.txt (the GPU sweep smoke test: sweeps/gpu-smoke.yaml through Ray Tune +
#   Optuna + MLflow, 4 trials sharing the GPU, then what MLflow recorded); tests.txt (the flow,
#   prior and training contract tests on CUDA); flows-cuda.txt (python -m benchmarks.flows on
#   the GPU; its ratios are measured side by side on that device).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu-check}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR=false
if [ -d .whl ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site:$PWD
else
    export PYTHONPATH=$PWD
fi
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  nproc
  python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda,
torch.cuda.get_device_name())"; } 2>&1 | tee "$OUT/device.txt"
status=0
STAGES=" ${*:-sweep tests flows} "
want() { [[ $STAGES == *" $1 "* ]]; }
# 1. The GPU sweep smoke test (Ray, Optuna, MLflow sqlite under ./flowtopo-runs).
if want sweep; then
rm -rf flowtopo-runs
{ start=$(date +%s)
  timeout 200 python3 -c 'from flowtopo.cli import main; main()' \
      sweep run sweeps/gpu-smoke.yaml; rc=$?
  echo "sweep exit $rc after $(( $(date +%s) - start )) s"
  timeout 60 python3 - <<'PY'
import mlflow
from flowtopo.tracking import resolve_tracking_uri
c = mlflow.MlflowClient(resolve_tracking_uri(None))
exp = c.get_experiment_by_name("gpu-smoke")
runs = c.search_runs([exp.experiment_id], max_results=1000)
by = {}
for r in runs:
    by.setdefault((r.data.tags.get("flowtopo.kind"), r.info.status), []).append(r)
print({f"{k[0]}/{k[1]}": len(v) for k, v in by.items()})
for r in runs:
    if r.data.tags.get("flowtopo.kind") == "trial":
        m = r.data.metrics
        print(r.info.status, r.data.tags.get("phase"), r.data.params.get("train.device"),
              r.data.tags.get("family"), "last epoch", int(m.get("epoch", -1)),
              "best_adv_loss", round(m.get("best_adv_loss", float("nan")), 4))
PY
  timeout 60 python3 -c 'from flowtopo.cli import main; main()' priors best --experiment gpu-smoke
} 2>&1 | tee "$OUT/sweep.txt"
grep -q "sweep exit 0" "$OUT/sweep.txt" || status=1
fi
# 2. The contract tests on CUDA.
want tests && { timeout 70 python3 -m pytest -q -p no:cacheprovider tests/test_flows.py tests/test_priors.py \
    tests/test_train.py::test_training_on_cuda_runs_there_or_is_a_clear_error \
    -k "cuda" 2>&1 | tee "$OUT/tests.txt" || status=1; }
# 3. The flows benchmark on the GPU.
want flows && { timeout 100 python3 -m benchmarks.flows --device cuda --repeats 10 2>&1 \
    | tee "$OUT/flows-cuda.txt" || status=1; }
exit $status
