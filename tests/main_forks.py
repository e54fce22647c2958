"""Runs many `python -m pshrnet_jax.main` command lines, fast.

    python tests/main_forks.py CASES.json RESULTS.json
    python tests/main_forks.py --serve

CASES.json holds {name: [argument, ...]} (the arguments after
`python -m pshrnet_jax.main`). This process imports `pshrnet_jax.main` once,
then forks one child per command line (two at a time); each child is a
fresh process from that point on and runs exactly what `python -m
pshrnet_jax.main ARGS` runs (`absl.app.run` with the module's `main` and
flag parser), with its stdout/stderr in files. The import is what takes a
command line most of its time to fail (about 2 s); forking skips it.
RESULTS.json gets {name: {"code": exit status, "stderr": text}}.

`--serve` runs command lines one at a time, as they come: each line on
stdin is {"args": [...], "out_dir": DIR, "cpu": N or null}; the answer on
stdout is {"pid": PID} once the child runs (pinned to core N, writing
DIR/stdout and DIR/stderr), then {"code": exit status} when it ends. The
caller may signal PID meanwhile (the kill-and-resume tests do).

No JAX computation happens before a fork: the children start JAX's
backend themselves.
"""

import json
import os
import sys
import tempfile

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, _REPO)

from absl import app  # pylint: disable=g-import-not-at-top,wrong-import-position

from pshrnet_jax import main  # pylint: disable=g-import-not-at-top,wrong-import-position
# A training run's first log step imports tensorboardX, which imports torch
# when it is installed (it is, for the tests): ~1.2 s, paid here once.
import tensorboardX  # pylint: disable=g-import-not-at-top,wrong-import-position,unused-import

PARALLEL = 2


def _child(args: list[str], out_dir: str, cpu: int | None = None) -> None:
  if cpu is not None:
    os.sched_setaffinity(0, {cpu})
  for fd, name in ((1, "stdout"), (2, "stderr")):
    target = os.open(os.path.join(out_dir, name),
                     os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.dup2(target, fd)
    os.close(target)
  sys.argv = ["pshrnet_jax/main.py", *args]
  try:
    app.run(main.main, flags_parser=main._parse_flags)  # pylint: disable=protected-access
  except SystemExit as e:
    code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # pylint: disable=protected-access
  os._exit(0)  # pylint: disable=protected-access


def run_all(cases: dict[str, list[str]]) -> dict[str, dict]:
  """Runs every case in a forked child; returns exit codes and stderr."""
  base = tempfile.mkdtemp(prefix="main_forks_")
  pending = list(cases.items())
  running: dict[int, tuple[str, str]] = {}
  results = {}
  while pending or running:
    while pending and len(running) < PARALLEL:
      name, args = pending.pop(0)
      out_dir = os.path.join(base, name)
      os.makedirs(out_dir)
      pid = os.fork()
      if pid == 0:
        _child(args, out_dir)
      running[pid] = (name, out_dir)
    pid, status = os.wait()
    name, out_dir = running.pop(pid)
    with open(os.path.join(out_dir, "stderr")) as f:
      stderr = f.read()
    results[name] = {"code": os.waitstatus_to_exitcode(status),
                     "stderr": stderr}
  return results


def serve() -> None:
  """Forks a child per request line on stdin; answers on stdout."""
  for line in sys.stdin:
    request = json.loads(line)
    pid = os.fork()
    if pid == 0:
      _child(request["args"], request["out_dir"], request.get("cpu"))
    print(json.dumps({"pid": pid}), flush=True)
    _, status = os.waitpid(pid, 0)
    print(json.dumps({"code": os.waitstatus_to_exitcode(status)}), flush=True)


if __name__ == "__main__" and sys.argv[1:] == ["--serve"]:
  serve()
elif __name__ == "__main__":
  with open(sys.argv[1]) as f:
    all_cases = json.load(f)
  with open(sys.argv[2], "w") as f:
    json.dump(run_all(all_cases), f)
