"""The project's imports flow one way, with no circles.

Every import statement of the project's code (module level and inside
functions alike) is parsed from source; `from a import b` counts as an import
of `a.b` when that is a module, importing a module also runs the `__init__`
of each package above it, and a bare `import x` in `scripts/` or `tests/`
is the sibling file `x.py` when there is one (the folder of the file Python
runs is on its path). The layers, lowest first:

    data_pipelines                     nothing from pshrnet_jax; inside it
                                       errors, atomic <- records <- readers
                                       <- builders <- benchmarks <- summary,
                                       tfds_builder; pipeline <- records
    pshrnet_jax.errors                 data_pipelines.errors (re-exported)
    workdir_layout, console,           import nothing from the project
    compile_stats
    models                             errors
    convert                            models, leaves
    training                           models, convert, data, leaves
    evaluation                         models, convert, data, leaves
    inference                          models, convert, evaluation, data
    driver                             training, evaluation, data, leaves
    main, search, extract, export      driver or inference, leaves

(the leaves: pshrnet_jax's errors, workdir_layout, console, compile_stats,
and data_pipelines' errors, atomic and cli). No circle between modules, nor
between packages: for each import, the two sides' outermost packages (or
modules) that differ, e.g. `pshrnet_jax` -> `data_pipelines` or
`pshrnet_jax.training` -> `pshrnet_jax.models`, are linked, and that graph
has no circle either. Nothing in training imports evaluation or the
reverse; the library never imports `tests`, `scripts`, `reference` or
torch; a script never imports a command script (one with a `__main__`
block), only helper modules.
"""

import ast
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LIBRARY = ("pshrnet_jax", "data_pipelines")
PROJECT = LIBRARY + ("configs", "scripts", "reference", "tests")
# Folders whose files Python runs directly: a bare import there may name a
# sibling file.
RUN_FROM = ("scripts", "tests")

_DATA_LEAVES = ("data_pipelines.errors", "data_pipelines.atomic",
                "data_pipelines.cli")
_LEAVES = ("pshrnet_jax.errors", "pshrnet_jax.workdir_layout",
           "pshrnet_jax.console", "pshrnet_jax.compile_stats") + _DATA_LEAVES
# Module prefix -> the prefixes it may import (besides itself and the root
# packages, whose __init__ imports nothing at module level).
ALLOWED = {
    "data_pipelines.errors": (),
    "data_pipelines.atomic": (),
    "data_pipelines.cli": (),
    # summary and tfds_builder sit on top of the data package.
    "data_pipelines": ("data_pipelines.records", "data_pipelines.readers",
                       "data_pipelines.builders", "data_pipelines.pipeline",
                       "data_pipelines.benchmarks") + _DATA_LEAVES,
    # Within the data package: records <- readers <- builders <- the
    # registry (benchmarks) <- summary, tfds_builder; the input pipeline
    # needs only the record types.
    "data_pipelines.records": (),
    "data_pipelines.readers": ("data_pipelines.records",) + _DATA_LEAVES,
    "data_pipelines.builders": ("data_pipelines.readers",
                                "data_pipelines.records") + _DATA_LEAVES,
    "data_pipelines.pipeline": ("data_pipelines.records",) + _DATA_LEAVES,
    "data_pipelines.benchmarks": ("data_pipelines.readers",
                                  "data_pipelines.builders",
                                  "data_pipelines.records") + _DATA_LEAVES,
    "pshrnet_jax.errors": ("data_pipelines.errors",),
    "pshrnet_jax.workdir_layout": (),
    "pshrnet_jax.console": (),
    "pshrnet_jax.compile_stats": (),
    "pshrnet_jax.models": ("pshrnet_jax.errors",),
    "pshrnet_jax.convert": ("pshrnet_jax.models",) + _LEAVES,
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
  """The project module `module` names when `importer` imports it."""
  if not level:
    folder, top = importer.split(".")[0], module.split(".")[0]
    if (folder in RUN_FROM and importer.count(".") == 1
        and top not in PROJECT and f"{folder}.{top}" in FILES):
      return f"{folder}.{module}"
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
      found.update(_resolve(alias.name, name, 0) for alias in node.names)
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


def _package_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
  """For each import, the outermost packages (or modules) that differ on
  its two sides: `a.b.c -> a.d.e` links `a.b -> a.d`."""
  linked = {}
  for name, targets in graph.items():
    for target in targets:
      ours, theirs = name.split("."), target.split(".")
      common = 0
      while ours[common:common + 1] == theirs[common:common + 1]:
        common += 1
      if common < min(len(ours), len(theirs)):  # Not a package's own part.
        linked.setdefault(".".join(ours[:common + 1]), set()).add(
            ".".join(theirs[:common + 1]))
  return linked


def test_the_check_finds_a_circle():
  # The first layout's circle: train -> eval_run -> train.
  fake = {"a.train": {"a.eval_run", "a.models"}, "a.eval_run": {"a.train"},
          "a.models": set()}
  assert _cycles(fake) == [["a.eval_run", "a.train"]]
  # A circle of packages that no two modules close: the data package
  # raising the trainer's errors while the trainer reads the data.
  fake = {"data.readers.market": {"lib.errors"},
          "lib.training.loop": {"data.pipeline", "lib.models.factory"},
          "lib.models.factory": {"lib.errors"}, "lib.errors": set(),
          "data.pipeline": set(), "lib": {"lib.training.loop"}}
  assert not _cycles(fake)
  assert _package_graph(fake) == {
      "data": {"lib"}, "lib": {"data"}, "lib.training": {"lib.models"},
      "lib.models": {"lib.errors"}}
  assert _cycles(_package_graph(fake)) == [["data", "lib"]]


def test_no_import_circles():
  cycles = _cycles(GRAPH)
  assert not cycles, f"import circles: {cycles}"


def test_no_circles_between_packages():
  cycles = _cycles(_package_graph(GRAPH))
  assert not cycles, f"circles between packages: {cycles}"


def _violations(graph: dict[str, set[str]], layer: str) -> list[str]:
  """Imports of `layer`'s modules against the declared direction."""
  bad = []
  for name in sorted(graph):
    if _layer(name) != layer:
      continue
    for target in sorted(graph[name]):
      target_layer = _layer(target)
      # A root package's __init__ imports nothing at module level; what is
      # imported below it is checked on its own.
      if target_layer == layer or target in LIBRARY:
        continue
      if target_layer is None:
        if target.split(".")[0] in PROJECT:
          bad.append(f"{name} -> {target}")
        continue
      if not any(target_layer == a or target_layer.startswith(a + ".")
                 for a in ALLOWED[layer]):
        bad.append(f"{name} -> {target}")
  return bad


def test_the_check_finds_a_forbidden_import():
  fake = {"pshrnet_jax.training.loop": {"pshrnet_jax.evaluation.metrics",
                                        "pshrnet_jax.models.factory"},
          "pshrnet_jax.models.factory": {"pshrnet_jax.training.steps"},
          "pshrnet_jax.convert.pytorch": {"data_pipelines",
                                          "data_pipelines.atomic"},
          "data_pipelines.readers.market": {
              "tests.tiny_setup", "pshrnet_jax.errors",
              "data_pipelines.errors", "data_pipelines.records"}}
  assert _violations(fake, "pshrnet_jax.training") == [
      "pshrnet_jax.training.loop -> pshrnet_jax.evaluation.metrics"]
  assert _violations(fake, "pshrnet_jax.models") == [
      "pshrnet_jax.models.factory -> pshrnet_jax.training.steps"]
  assert _violations(fake, "pshrnet_jax.convert") == []
  assert _violations(fake, "data_pipelines.readers") == [
      "data_pipelines.readers.market -> pshrnet_jax.errors",
      "data_pipelines.readers.market -> tests.tiny_setup"]


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_imports_flow_one_way(layer):
  bad = _violations(GRAPH, layer)
  assert not bad, f"imports against the declared direction: {bad}"


def test_data_pipelines_imports_nothing_from_pshrnet_jax():
  bad = [f"{name} -> {target}" for name in sorted(FILES)
         if name.split(".")[0] == "data_pipelines"
         for target in sorted(GRAPH[name])
         if target.split(".")[0] == "pshrnet_jax"]
  assert not bad, bad


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
    ("pshrnet_jax.main",
     ("jax", "matplotlib", "tensorflow_datasets", "torch")),
    ("pshrnet_jax.extract", ("jax",)),
    ("pshrnet_jax.search", ("jax",)),
    ("pshrnet_jax.export", ("jax",)),
])
def test_import_cost_stays_where_it_is_used(module, unwanted):
  # The trainer needs no plotting or SR metrics, and the command imports
  # matplotlib only when a report draws (half a second of every start); TFDS
  # (seconds to import) is loaded only for --config.data.source=tfds. The
  # commands import JAX (two seconds) once their flags and output paths
  # have passed: --help, a bad flag and a refused file answer at once.
  code = (f"import sys, {module}; "
          f"print(sorted(m for m in {unwanted!r} if m in sys.modules))")
  out = subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True,
                       capture_output=True, text=True).stdout
  assert out.strip() == "[]"


def _is_command(name: str) -> bool:
  with open(FILES[name]) as f:
    tree = ast.parse(f.read())
  return any(isinstance(node, ast.If) and "__main__" in ast.unparse(node.test)
             for node in tree.body)


def test_bare_imports_in_scripts_name_their_siblings():
  assert _resolve("benchmark_eval", "scripts.benchmark_train", 0) == (
      "scripts.benchmark_eval")
  assert _resolve("tiny_setup", "tests.test_main", 0) == "tests.tiny_setup"
  assert _resolve("numpy", "scripts.benchmark_eval", 0) == "numpy"
  assert _resolve("configs.base", "scripts.jax_steps", 0) == "configs.base"
  assert "tests.tiny_setup" in GRAPH["tests.test_main"]


def test_scripts_import_no_command_script():
  commands = {name for name in FILES
              if name.startswith("scripts.") and _is_command(name)}
  assert {"scripts.benchmark_eval", "scripts.reproduce"} <= commands
  assert "scripts.jax_steps" not in commands
  bad = [f"{name} -> {target}" for name in sorted(FILES)
         if name.startswith("scripts.")
         for target in sorted(GRAPH[name] & commands)]
  assert not bad, bad


def test_scripts_run_from_anywhere():
  env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
  for script, word in (("scripts/benchmark_data.py", "--num_ids"),
                       ("scripts/benchmark_eval.py", "--rerank")):
    # Run as README shows them: from anywhere, without PYTHONPATH.
    proc = subprocess.run([sys.executable, os.path.join(REPO, script),
                           "--help"], cwd="/", env=env, capture_output=True,
                          text=True)
    assert word in proc.stdout and "Traceback" not in proc.stderr, (
        script, proc.stderr[-2000:])
