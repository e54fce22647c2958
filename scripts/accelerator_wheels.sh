#!/usr/bin/env bash
# Here, on a machine that reaches PyPI: downloads into .whl/ (repository root,
# ignored by git) the wheels that the GPU machines' image lacks, for its
# Python 3.12 on x86-64, and checks that their requirements are either among
# them or in that image. scripts/accelerator_setup.sh installs them there;
# docs/benchmarks.md ("Accelerator check") has the device command.
#
# The image (/work/.library/device/KINDS.md, "Python packages already there")
# has jax (CUDA), flax, optax, orbax-checkpoint, torch, numpy, absl-py,
# protobuf, etils, tensorboard, ... but not grain, tensorflow-datasets,
# ml_collections or tensorboardX, nor the requirements of those below.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}

# One version each (two stop the install there). promise has no wheel on
# PyPI: it is built here from its source (pure Python).
WHEELS=(
  grain==0.2.18 array_record==0.8.6 portpicker==1.6.0
  tensorflow-datasets==4.9.10 dm-tree==0.1.10 immutabledict==4.3.1
  simple-parsing==0.1.9 docstring_parser==0.18.0 tensorflow-metadata==1.21.0
  googleapis-common-protos==1.76.0 termcolor==3.3.0 toml==0.10.2
  importlib_resources==7.1.0
  ml_collections==1.1.0 tensorboardX==2.6.5
)
BUILT=(promise==2.3)
# What the wheels above require and the image already has.
IMAGE_HAS="absl-py attrs cloudpickle etils fsspec numpy packaging protobuf
psutil pyarrow pyyaml requests six tqdm typing-extensions wrapt zipp"

rm -rf .whl
mkdir .whl
"$PYTHON" -m pip download -q --no-deps --only-binary=:all: \
  --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
  --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
  -d .whl "${WHEELS[@]}"
"$PYTHON" -m pip wheel -q --no-deps -w .whl "${BUILT[@]}"

IMAGE_HAS="$IMAGE_HAS" "$PYTHON" - <<'PY'
"""Every requirement of every wheel (Python 3.12 on Linux, no extras
but those asked for) is another wheel here or in the image."""
import glob, os, re, zipfile

def norm(name):
  return re.sub(r"[-_.]+", "-", name).lower()

wheels = {norm(os.path.basename(w).split("-")[0]): w
          for w in glob.glob(".whl/*.whl")}
image = {norm(n) for n in os.environ["IMAGE_HAS"].split()}
env = {"python_version": "3.12", "sys_platform": "linux",
       "platform_system": "Linux", "extra": ""}
missing = []
for name, path in sorted(wheels.items()):
  with zipfile.ZipFile(path) as z:
    meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
    lines = z.read(meta).decode().splitlines()
  for line in lines:
    if not line.startswith("Requires-Dist:"):
      continue
    spec, _, marker = line[len("Requires-Dist:"):].partition(";")
    marker = marker.strip()
    if "extra ==" in marker:
      continue
    m = re.match(r"python_version\s*([<>=!]+)\s*\"([\d.]+)\"", marker)
    if m:
      have = tuple(int(v) for v in env["python_version"].split("."))
      want = tuple(int(v) for v in m.group(2).split("."))
      if not eval(f"{have!r} {m.group(1)} {want!r}"):
        continue
    if "sys_platform" in marker and "win32" in marker and "!=" not in marker:
      continue
    req = norm(re.match(r"\s*([A-Za-z0-9_.\-]+)", spec).group(1))
    if req not in wheels and req not in image:
      missing.append(f"{name} needs {spec.strip()}")
if missing:
  raise SystemExit("not in .whl/ nor in the image:\n  " + "\n  ".join(missing))
print(f"{len(wheels)} wheels in .whl/, their requirements complete")
PY
du -sh .whl
