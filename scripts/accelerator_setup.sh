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
# What training needs (stop without it), and the TFDS source (only say so:
# the check reads the image files).
for module, needed in (("grain", True), ("ml_collections", True),
                       ("tensorboardX", True), ("pshrnet_jax.driver", True),
                       ("data_pipelines.tfds_builder", False)):
  try:
    importlib.import_module(module)
  except Exception as e:
    message = f"import {module} failed: {type(e).__name__}: {e}"
    if needed:
      sys.exit(f"accelerator_setup: {message}")
    print(f"accelerator_setup: WARNING: {message} (data.source=tfds will "
          "not work here)", flush=True)
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
