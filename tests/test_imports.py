"""The package's imports flow one way, with no circles.

Every import statement of the project's code (module level and inside
functions alike) is parsed from source; `from a import b` counts as an import
of `a.b` when that is a module, and importing a module also runs the
`__init__` of each package above it. The layers, lowest first:

    errors, atomic, workdir_layout,    import nothing from the project
    console
    models                             errors
    convert                            models, errors, atomic
    data_pipelines                     errors, atomic; inside it
                                       records <- readers <- builders <-
                                       benchmarks <- summary, tfds_builder,
                                       and pipeline <- records only
    training                           models, convert, data, leaves
    evaluation                         models, convert, data, leaves
    inference                          models, convert, evaluation, data
    driver                             training, evaluation, data, leaves
    main, search, extract, export      driver or inference, leaves

Nothing in training imports evaluation or the reverse; the library never
imports `tests`, `scripts`, `reference` or torch.
"""

import ast
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LIBRARY = ("pshrnet_jax", "data_pipelines")
PROJECT = LIBRARY + ("configs", "scripts", "reference", "tests")

_LEAVES = ("pshrnet_jax.errors", "pshrnet_jax.atomic",
           "pshrnet_jax.workdir_layout", "pshrnet_jax.console")
# Module prefix -> the prefixes it may import (besides itself and the root
# package `pshrnet_jax`, whose __init__ imports nothing).
ALLOWED = {
    "pshrnet_jax.errors": (),
    "pshrnet_jax.atomic": (),
    "pshrnet_jax.workdir_layout": (),
    "pshrnet_jax.console": (),
    "pshrnet_jax.models": ("pshrnet_jax.errors",),
    "pshrnet_jax.convert": ("pshrnet_jax.models",) + _LEAVES,
    # summary and tfds_builder sit on top of the data package.
    "data_pipelines": ("data_pipelines.records", "data_pipelines.readers",
                       "data_pipelines.builders", "data_pipelines.pipeline",
                       "data_pipelines.benchmarks") + _LEAVES,
    # Within the data package: records <- readers <- builders <- the
    # registry (benchmarks) <- summary, tfds_builder; the input pipeline
    # needs only the record types.
    "data_pipelines.records": (),
    "data_pipelines.readers": ("data_pipelines.records",) + _LEAVES,
    "data_pipelines.builders": ("data_pipelines.readers",
                                "data_pipelines.records") + _LEAVES,
    "data_pipelines.pipeline": ("data_pipelines.records",) + _LEAVES,
    "data_pipelines.benchmarks": ("data_pipelines.readers",
                                  "data_pipelines.builders",
                                  "data_pipelines.records") + _LEAVES,
    "pshrnet_jax.training": ("pshrnet_jax.models", "pshrnet_jax.convert",
                             "data_pipelines") + _LEAVES,
    "pshrnet_jax.evaluation": ("pshrnet_jax.models", "pshrnet_jax.convert",
                               "data_pipelines") + _LEAVES,
    "pshrnet_jax.config_checks": ("pshrnet_jax.models",
                                  "pshrnet_jax.training",
                                  "pshrnet_jax.evaluation") + _LEAVES,
    "pshrnet_jax.driver": ("pshrnet_jax.training", "pshrnet_jax.evaluation",
                           "pshrnet_jax.config_checks",
                           "data_pipelines") + _LEAVES,
    "pshrnet_jax.main": ("pshrnet_jax.driver",) + _LEAVES,
    # Using a trained model: loading, gallery search, export; and their
    # command lines.
    "pshrnet_jax.inference": ("pshrnet_jax.models", "pshrnet_jax.convert",
                              "pshrnet_jax.evaluation",
                              "data_pipelines") + _LEAVES,
    "pshrnet_jax.search": ("pshrnet_jax.inference",) + _LEAVES,
    "pshrnet_jax.extract": ("pshrnet_jax.inference",) + _LEAVES,
    "pshrnet_jax.export": ("pshrnet_jax.inference",) + _LEAVES,
}
FORBIDDEN_FOR_LIBRARY = ("tests", "scripts", "reference", "torch",
                         "torchvision")


def _module_name(path: str) -> str:
  rel = os.path.relpath(path, REPO)[:-len(".py")].split(os.sep)
  if rel[-1] == "__init__":
    rel = rel[:-1]
  return ".".join(rel)


def _project_files() -> dict[str, str]:
  files = {}
  for top in PROJECT:
    for root, dirs, names in os.walk(os.path.join(REPO, top)):
      dirs[:] = [d for d in dirs if d != "__pycache__"]
      for name in names:
        if name.endswith(".py"):
          path = os.path.join(root, name)
          files[_module_name(path)] = path
  return files


FILES = _project_files()


def _resolve(module: str, importer: str, level: int) -> str:
  if not level:
    return module
  package = importer.split(".")
  is_package = FILES[importer].endswith("__init__.py")
  base = package[:len(package) - level + (1 if is_package else 0)]
  return ".".join(base + ([module] if module else []))


def _imports(name: str) -> set[str]:
  """Every module `name` imports, with the packages above each."""
  with open(FILES[name]) as f:
    tree = ast.parse(f.read(), FILES[name])
  found = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      found.update(alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom):
      base = _resolve(node.module or "", name, node.level)
      found.add(base)
      found.update(f"{base}.{alias.name}" for alias in node.names
                   if f"{base}.{alias.name}" in FILES)
  with_parents = set()
  for module in found:
    parts = module.split(".")
    with_parents.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
  # A module's own enclosing packages are initialised before it runs, by
  # Python, not by its imports: a package __init__ re-exporting a submodule
  # that imports a sibling is no circle.
  parts = name.split(".")
  own_packages = {".".join(parts[:i]) for i in range(1, len(parts))}
  return with_parents - own_packages - {name}


GRAPH = {name: {m for m in _imports(name) if m in FILES} for name in FILES}
EXTERNAL = {name: _imports(name) - set(FILES) for name in FILES}


def _layer(module: str) -> str | None:
  matches = [p for p in ALLOWED if module == p or module.startswith(p + ".")]
  return max(matches, key=len) if matches else None


def test_the_graph_sees_the_packages():
  # A parser that found nothing would pass every test below.
  assert "pshrnet_jax.training.loop" in FILES
  assert "pshrnet_jax.models.factory" in GRAPH["pshrnet_jax.training.loop"]
  assert "data_pipelines.pipeline" in GRAPH["pshrnet_jax.training.loop"]
  assert "pshrnet_jax.evaluation" in GRAPH["pshrnet_jax.driver"]


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
  """Tarjan's strongly connected components of more than one module."""
  index, low, stack, on_stack, cycles = {}, {}, [], set(), []

  def visit(v):
    index[v] = low[v] = len(index)
    stack.append(v)
    on_stack.add(v)
    for w in sorted(graph.get(v, ())):
      if w not in index:
        visit(w)
        low[v] = min(low[v], low[w])
      elif w in on_stack:
        low[v] = min(low[v], index[w])
    if low[v] == index[v]:
      component = []
      while True:
        w = stack.pop()
        on_stack.discard(w)
        component.append(w)
        if w == v:
          break
      if len(component) > 1:
        cycles.append(sorted(component))

  for v in sorted(graph):
    if v not in index:
      visit(v)
  return cycles


def test_the_check_finds_a_circle():
  # The first layout's circle: train -> eval_run -> train.
  fake = {"a.train": {"a.eval_run", "a.models"}, "a.eval_run": {"a.train"},
          "a.models": set()}
  assert _cycles(fake) == [["a.eval_run", "a.train"]]


def test_no_import_circles():
  cycles = _cycles(GRAPH)
  assert not cycles, f"import circles: {cycles}"


def _violations(graph: dict[str, set[str]], layer: str) -> list[str]:
  """Imports of `layer`'s modules against the declared direction."""
  bad = []
  for name in sorted(graph):
    if _layer(name) != layer:
      continue
    for target in sorted(graph[name]):
      target_layer = _layer(target)
      if target_layer is None:
        if target.split(".")[0] in ("tests", "scripts", "reference",
                                    "configs"):
          bad.append(f"{name} -> {target}")
        continue
      if target_layer == layer or target == "pshrnet_jax":
        continue
      if not any(target_layer == a or target_layer.startswith(a + ".")
                 for a in ALLOWED[layer]):
        bad.append(f"{name} -> {target}")
  return bad


def test_the_check_finds_a_forbidden_import():
  fake = {"pshrnet_jax.training.loop": {"pshrnet_jax.evaluation.metrics",
                                        "pshrnet_jax.models.factory"},
          "pshrnet_jax.models.factory": {"pshrnet_jax.training.steps"},
          "data_pipelines.readers.market": {"tests.tiny_setup"}}
  assert _violations(fake, "pshrnet_jax.training") == [
      "pshrnet_jax.training.loop -> pshrnet_jax.evaluation.metrics"]
  assert _violations(fake, "pshrnet_jax.models") == [
      "pshrnet_jax.models.factory -> pshrnet_jax.training.steps"]
  assert _violations(fake, "data_pipelines.readers") == [
      "data_pipelines.readers.market -> tests.tiny_setup"]


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_imports_flow_one_way(layer):
  bad = _violations(GRAPH, layer)
  assert not bad, f"imports against the declared direction: {bad}"


def test_library_imports_no_tests_scripts_or_torch():
  bad = [f"{name} -> {target}" for name in sorted(FILES)
         if name.split(".")[0] in LIBRARY
         for target in sorted(GRAPH[name] | EXTERNAL[name])
         if target.split(".")[0] in FORBIDDEN_FOR_LIBRARY]
  assert not bad, bad


def test_scripts_do_not_import_tests():
  bad = [f"{name} -> {target}" for name in sorted(FILES)
         if name.split(".")[0] in ("scripts", "reference", "configs")
         for target in sorted(GRAPH[name]) if target.startswith("tests")]
  assert not bad, bad


@pytest.mark.parametrize("module, unwanted", [
    ("pshrnet_jax.training.loop",
     ("matplotlib", "tensorflow_datasets", "torch", "skimage")),
    ("pshrnet_jax.main", ("tensorflow_datasets", "torch")),
])
def test_import_cost_stays_where_it_is_used(module, unwanted):
  # The trainer needs no plotting or SR metrics; TFDS (seconds to import) is
  # loaded only for --config.data.source=tfds.
  code = (f"import sys, {module}; "
          f"print(sorted(m for m in {unwanted!r} if m in sys.modules))")
  out = subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True,
                       capture_output=True, text=True).stdout
  assert out.strip() == "[]"


def test_public_entry_points_keep_working():
  # What users' code and commands written against the first layout use.
  code = "\n".join([
      "from pshrnet_jax.convert import load_torch_hrnet, load_torch_pshrnet",
      "from pshrnet_jax.convert import restore_variables, save_variables",
      "from pshrnet_jax.models import HRNetClassifier, HRNetReID, PSHRNet",
      "from pshrnet_jax.evaluation import evaluate_rank, evaluate",
      "from pshrnet_jax import features",
      "from pshrnet_jax.evaluation import features as moved",
      "assert features is moved",
      "assert callable(features.features_from_images)",
      "assert callable(features.rank_gallery)",
      "import pshrnet_jax.main, data_pipelines.summary",
      "print('ok')",
  ])
  out = subprocess.run([sys.executable, "-c", code], cwd=REPO,
                       capture_output=True, text=True)
  assert out.stdout.strip() == "ok", out.stderr[-2000:]
  env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
  for script, word in (("scripts/convert_pytorch_hrnet.py", "--input"),
                       ("scripts/benchmark_eval.py", "--large")):
    # Run as README shows them: from anywhere, without PYTHONPATH.
    proc = subprocess.run([sys.executable, os.path.join(REPO, script),
                           "--help"], cwd="/", env=env, capture_output=True,
                          text=True)
    assert word in proc.stdout and "Traceback" not in proc.stderr, (
        script, proc.stderr[-2000:])
