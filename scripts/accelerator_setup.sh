#!/usr/bin/env bash
# There, on a GPU machine of this workplace (its python3 has jax with CUDA,
# flax, optax, orbax-checkpoint and torch): installs the wheels carried in
# .whl/ (scripts/accelerator_wheels.sh made them) into /tmp/site, checks that
# what the project imports imports, prints the versions that will run, then
# runs the given command with PYTHONPATH=/tmp/site, e.g.
#
#   bash scripts/accelerator_setup.sh python3 scripts/accelerator_check.py --out=$OUT
set -euo pipefail
cd "$(dirname "$0")/.."
SITE=${SITE:-/tmp/site}
if ! ls .whl/*.whl >/dev/null 2>&1; then
  echo "accelerator_setup: no wheels in $(pwd)/.whl: run" \
       "scripts/accelerator_wheels.sh first, and carry .whl" >&2
  exit 2
fi
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
  --upgrade --target "$SITE" .whl/*.whl
export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
python3 - <<'PY'
import importlib, importlib.metadata as md, sys
for module in ("grain", "ml_collections", "tensorboardX", "tensorflow_datasets",
               "data_pipelines.pipeline", "pshrnet_jax.driver",
               "data_pipelines.tfds_builder"):
  try:
    importlib.import_module(module)
  except Exception as e:  # Say which, then stop.
    sys.exit(f"accelerator_setup: import {module} failed: {type(e).__name__}: {e}")
names = ("jax", "jaxlib", "jax-cuda13-plugin", "jax-cuda12-plugin", "flax",
         "optax", "orbax-checkpoint", "torch", "numpy", "protobuf", "grain",
         "tensorflow-datasets", "ml_collections", "tensorboardX")
found = []
for name in names:
  try:
    found.append(f"{name} {md.version(name)}")
  except md.PackageNotFoundError:
    pass
print(f"accelerator_setup: Python {sys.version.split()[0]}; " + ", ".join(found),
      flush=True)
PY
if [ "$#" -gt 0 ]; then
  exec "$@"
fi
