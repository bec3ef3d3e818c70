#!/usr/bin/env bash
# Run HERE (the CPU machine, which reaches the package registry) before a device call: fetches
# into .whl/ (git-ignored) the wheels that the GPU machine's image lacks for the GPU checks
# (benchmarks/gpu_check.sh). Its python is 3.12 with torch, torchdiffeq, numpy, scipy,
# scikit-learn, pandas, pyarrow, typer and rich; flowtopo's sweep also needs Ray, Optuna and
# MLflow. A device call carries at most 64 MiB, and Ray's wheel is 79 MB: the copy carried is
# Ray's own wheel without its Java jar, RLlib, Serve, LLM and the dashboard's web build (none
# of which a local Tune sweep imports or serves), 39 MB. MLflow is mlflow-skinny (the client and
# the sqlite store; no server UI), without the Google auth stack it imports only lazily.
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
rm -rf .whl && mkdir -p .whl  # about 60 MB in all: close to the 64 MiB a call carries
# Pins: constraints.txt where it pins, else the versions the dev environment resolved.
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d .whl \
    ray==2.60.0 mlflow-skinny==3.17.2 optuna==5.0.0 zuko==1.6.0 \
    pydantic==2.14.4 pydantic_core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 \
    alembic==1.20.1 SQLAlchemy==2.1.9 Mako==1.4.3 colorlog==6.12.0 \
    jsonschema==4.26.0 jsonschema-specifications==2025.9.1 referencing==0.37.0 \
    rpds-py==2026.9.1 tensorboardX==2.6.5 cachetools==7.3.3 databricks-sdk==0.162.0 \
    fastapi==0.165.0 starlette==1.10.0 uvicorn==0.54.0 gitpython==3.2.1 gitdb==4.0.12 \
    smmap==5.0.3 importlib-metadata==9.1.0 opentelemetry-api==1.45.2 \
    opentelemetry-proto==1.45.2 opentelemetry-sdk==1.45.2 \
    opentelemetry-semantic-conventions==0.66b2 python-dotenv==1.2.4 sqlparse==0.6.1 \
    tzdata==2026.6 cryptography==50.0.2 cffi==2.1.1 pycparser==3.12
python3 - <<'PY'
"""Rewrites Ray's wheel without the parts a Tune sweep never imports (and their RECORD rows)."""
import glob
import os
import zipfile

DROP = ("ray/jars/", "ray/rllib/", "ray/serve/", "ray/llm/", "ray/dashboard/client/build/")
src = glob.glob(".whl/ray-*.whl")[0]
dst = src + ".trim"
gone = lambda n: n.startswith(DROP) or n.endswith(".js.map")  # noqa: E731
with zipfile.ZipFile(src) as zi, zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED,
                                                 compresslevel=9) as zo:
    for info in zi.infolist():
        if gone(info.filename):
            continue
        data = zi.read(info.filename)
        if info.filename.endswith(".dist-info/RECORD"):
            rows = [r for r in data.decode().splitlines() if not gone(r.split(",")[0])]
            data = ("\n".join(rows) + "\n").encode()
        zo.writestr(info, data, compress_type=zipfile.ZIP_DEFLATED, compresslevel=9)
os.replace(dst, src)
PY
du -sh .whl
