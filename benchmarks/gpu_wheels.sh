#!/usr/bin/env bash
# Run HERE (the CPU machine, which reaches the package registry) before a device call: fetches
# into .whl/ (git-ignored) the wheels that the GPU machine's image lacks for the GPU checks.
# Its python is 3.12 with torch and torchdiffeq; flowtopo's model layer also needs pydantic and
# zuko, the prior tests optuna. Ray (a 79 MB wheel) does not fit the 64 MiB that a device call
# carries, so the GPU machine runs the flow, prior and training checks and the flows benchmark,
# not a Ray sweep (docs/benchmarks.md, "GPU").
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
rm -rf .whl && mkdir -p .whl
# Pins: constraints.txt where it pins, else the versions the dev environment resolved.
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d .whl \
    pydantic==2.14.4 pydantic_core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 \
    zuko==1.6.0 optuna==5.0.0 alembic==1.20.1 SQLAlchemy==2.1.9 colorlog==6.12.0 Mako==1.4.3 \
    greenlet==3.5.6
du -sh .whl
