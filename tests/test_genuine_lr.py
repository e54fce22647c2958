"""CAVIAR as SPEC 5 defines it, and genuinely low-resolution training images.

- The reader, on a fixture with the published counts (50 people seen by
  both cameras, 22 by one): the seeded 25 / 25 split per split_index,
  single-camera people out unless asked for, and which training images are
  genuine LR (no HR original).
- The pipeline: phase-2 pairs are flagged `has_hr` exactly when they have a
  real HR original; phase 1 samples HR originals only, with the label map of
  phase 2.
- The phase-2 step: a genuine-LR pair counts in L_ID only. Its HR side
  cannot change the step (bit for bit: not the loss terms, not the update),
  L_ID is the unmasked step's, and L_SR is the mean over the other pairs
  (L_PS's masked mean is checked on sliced batches in test_losses.py).
- Evaluation: SR quality is measured on queries with an HR original only,
  and results.json says over which (or why not).
"""

import dataclasses

import jax
import numpy as np
import pytest

import fixtures_data
import tiny_setup as tiny
from data_pipelines import benchmarks
from data_pipelines import pipeline
from data_pipelines.readers import caviar
from pshrnet_jax import driver
from pshrnet_jax.evaluation import workdir_eval
from pshrnet_jax.models.inputs import normalize_images
from pshrnet_jax.training import phases
from pshrnet_jax.training import sharding
from pshrnet_jax.training import steps

BOTH = tuple(range(1, 51))  # seen by both cameras, as published
SINGLE = tuple(range(51, 73))  # seen by one camera
SINGLE_LR = tuple(range(51, 62))  # ... of them, by the LR camera
LR_CAMERA = 1  # the fixture's camera 1 (images 011-020) is the small one
GENUINE_ROW = 3


@pytest.fixture(scope="module")
def caviar_root(tmp_path_factory):
  return fixtures_data.make_caviar(
      str(tmp_path_factory.mktemp("caviar")), both=BOTH, single=SINGLE,
      per_camera=2, single_lr=SINGLE_LR)


def _test_ids(trial):
  order = np.random.default_rng([0, trial]).permutation(len(BOTH))
  return {BOTH[i] for i in order[:25]}


def test_caviar_25_25_split_of_the_two_camera_people(caviar_root):
  records = caviar.read_caviar(caviar_root)
  tests = []
  for trial in (0, 1):
    bench = caviar.caviar_split(records, seed=0, trial=trial)
    test = _test_ids(trial)
    assert len(test) == 25
    assert {r.pid for r in bench.query} == {r.pid for r in bench.gallery} == test
    assert {r.pid for r in bench.train} == set(BOTH) - test  # 25, no singles
    assert {r.camid for r in bench.query} == {LR_CAMERA}
    assert not any(r.has_hr_original for r in bench.query)
    assert all(r.has_hr_original for r in bench.gallery)
    # 25 people x 2 cameras x 2 images; the LR camera's are genuine LR.
    assert len(bench.train) == 100
    assert all(r.has_hr_original == (r.camid != LR_CAMERA)
               and (r.lr_path is None) == r.has_hr_original
               for r in bench.train)
    tests.append(test)
  assert tests[0] != tests[1]  # split_index draws another half

  hr_only = caviar.caviar_split(records, genuine_lr_train=False)
  assert len(hr_only.train) == 50 and all(r.has_hr_original
                                          for r in hr_only.train)

  with_single = caviar.caviar_split(records, single_camera_train=True)
  singles = [r for r in with_single.train if r.pid in SINGLE]
  assert {r.pid for r in singles} == set(SINGLE)
  # Told by size: the small single-camera people are the LR camera's.
  for r in singles:
    genuine = r.pid in SINGLE_LR
    assert r.camid == (LR_CAMERA if genuine else 1 - LR_CAMERA), r
    assert r.has_hr_original != genuine, r


@pytest.fixture(scope="module")
def caviar_train(caviar_root, tmp_path_factory):
  """The registry's default CAVIAR build: training records with LR."""
  built = benchmarks.prepare_benchmark(
      "caviar", caviar_root, build_dir=str(tmp_path_factory.mktemp("build")))
  return built.benchmark.train


def test_phase2_pairs_flag_a_real_hr_original(caviar_train):
  genuine = [r for r in caviar_train if not r.has_hr_original]
  assert genuine and all(r.camid == LR_CAMERA and r.lr_path == r.hr_path
                         for r in genuine)
  assert all(r.lr_factor in (2, 3, 4) for r in caviar_train
             if r.has_hr_original)
  phase2 = pipeline.make_train_iterator(
      caviar_train, image_size=tiny.IMAGE_SIZE, p=4, k=2, with_lr=True,
      pad=3)
  flags = []
  for _ in range(phase2.steps_per_epoch):
    batch = next(phase2)
    for hr, lr, has_hr in zip(batch["hr"], batch["lr"], batch["has_hr"]):
      # A genuine image is the same file on both sides of its pair; a real
      # pair is the HR original and its down- then up-sampled version.
      assert np.array_equal(hr, lr) == (not has_hr)
      flags.append(bool(has_hr))
  assert any(flags) and not all(flags)

  phase1 = pipeline.make_train_iterator(
      caviar_train, image_size=tiny.IMAGE_SIZE, p=4, k=2, with_lr=False,
      pad=3)
  assert phase1.records == tuple(r for r in caviar_train if r.has_hr_original)
  assert phase1.num_classes == phase2.num_classes == 25
  label_of = {pid: i for i, pid in enumerate(sorted({r.pid for r in
                                                      caviar_train}))}
  for iterator in (phase1, phase2):
    batch = next(iterator)
    assert "has_hr" not in batch or iterator is phase2
    assert [label_of[p] for p in batch["pid"]] == list(batch["label"])


@pytest.fixture(scope="module")
def masked_steps():
  """The tiny phase-2 step on one batch with a genuine-LR pair, three ways."""
  config = tiny.tiny_config()
  mesh = sharding.make_data_mesh(1)
  built = tiny.build_step(config, phases.STUDENT, mesh)
  student, teacher = built.model, built.teacher
  optimizer, step_fn = built.optimizer, built.step
  batch = tiny.tiny_batch()
  # The pipeline's batch layout, so this is the program the runs compile.
  batch["pid"] = batch["label"] + 100
  batch["has_hr"] = np.ones(len(batch["label"]), bool)
  # A genuine LR image is its own "HR" image.
  batch["hr"][GENUINE_ROW] = batch["lr"][GENUINE_ROW]
  masked = dict(batch, has_hr=batch["has_hr"].copy())
  masked["has_hr"][GENUINE_ROW] = False
  other_hr = dict(masked, hr=masked["hr"].copy())
  other_hr["hr"][GENUINE_ROW] = 255 - other_hr["hr"][GENUINE_ROW]

  variables = tiny.init_variables(student, config.seed)
  teacher_vars = tiny.calibrate_batch_stats(
      teacher, tiny.init_variables(teacher, config.seed + 1), batch["hr"])
  key = jax.random.key(1)

  def run(b):
    state = sharding.put_replicated(
        steps.create_state(variables, optimizer.tx), mesh)
    new_state, metrics = step_fn(
        state, sharding.put_batch(b, mesh), sharding.put_replicated(key, mesh),
        sharding.put_replicated(teacher_vars, mesh))
    return jax.device_get((new_state, metrics))

  # L_SR per pair from the SR network alone (it has no BatchNorm, so train
  # and eval mode agree; eager, outside the step). L_PS's masked mean is
  # the same function, checked against sliced batches in test_losses.py.
  sr = student.sr.apply({"params": variables["params"]["sr"]},
                        normalize_images(batch["lr"]))
  hr = np.asarray(normalize_images(batch["hr"]), np.float64)
  sr_per_pair = np.abs(np.asarray(sr, np.float64) - hr).mean(axis=(1, 2, 3))
  return dict(all=run(batch), masked=run(masked), other_hr=run(other_hr),
              sr_per_pair=sr_per_pair, loss=config.loss)


def _leaves(tree):
  return [np.asarray(x) for x in jax.tree.leaves(tree)]


def test_genuine_pair_counts_in_l_id_only(masked_steps):
  (state_m, metrics_m) = masked_steps["masked"]
  (state_o, metrics_o) = masked_steps["other_hr"]
  (_, metrics_a) = masked_steps["all"]
  # Its HR side (the teacher's input, L_SR's target) cannot change the step.
  assert metrics_m == metrics_o
  for a, b in zip(_leaves(state_m) , _leaves(state_o)):
    assert np.array_equal(a, b)
  # L_ID still uses every pair: identical to the unmasked step's.
  for key in ("ce", "triplet", "id"):
    assert metrics_m[key] == metrics_a[key], key
  # L_SR is the mean over the other pairs (over all pairs without the
  # mask); L_PS changes with the mask too.
  others = np.arange(tiny.P * tiny.K) != GENUINE_ROW
  values = masked_steps["sr_per_pair"]
  np.testing.assert_allclose(metrics_m["sr"], values[others].mean(),
                             rtol=1e-5)
  np.testing.assert_allclose(metrics_a["sr"], values.mean(), rtol=1e-5)
  for term in ("sr", "ps"):
    assert abs(metrics_m[term] - metrics_a[term]) > 1e-3 * metrics_a[term]
  loss = masked_steps["loss"]
  np.testing.assert_allclose(
      metrics_m["loss"], metrics_m["id"] + loss.sr_weight * metrics_m["sr"]
      + loss.ps_weight * metrics_m["ps"], rtol=1e-6)


def test_sr_quality_only_for_queries_with_an_hr_original(
    tiny_trained, tiny_source, tmp_path):
  workdir = tiny.copy_workdir(tiny_trained["workdir"], tmp_path)
  results = tiny_trained["results"]
  num_queries = results["num_queries"]
  assert results["sr"]["num_images"] == num_queries
  assert results["sr_quality_scope"] == (
      f"all {num_queries} queries (each has an HR original)")

  config = tiny.config_with(tiny_source)
  bench = driver.load_benchmark(config, workdir)
  # Half the queries made genuine LR: they keep their image, lose their HR.
  half = len(bench.query) // 2
  query = tuple(r._replace(hr_path=r.lr_path) if i < half else r
                for i, r in enumerate(bench.query))
  mixed = workdir_eval.evaluate_workdir(
      config, workdir, dataclasses.replace(bench, query=query), {})
  assert mixed["sr"]["num_images"] == len(query) - half
  assert mixed["sr_quality_scope"] == (
      f"the {len(query) - half} of {len(query)} queries with an HR original;"
      f" the other {half} are genuinely low-resolution")
  # Ranking is unchanged: the model sees the same LR images.
  assert mixed["rank1"] == results["rank1"] and mixed["mAP"] == results["mAP"]

  genuine = tuple(r._replace(hr_path=r.lr_path) for r in bench.query)
  none = workdir_eval.evaluate_workdir(
      config, workdir, dataclasses.replace(bench, query=genuine), {})
  assert "sr" not in none
  assert none["sr_quality_scope"].startswith(
      f"not reported: none of the {len(genuine)} queries has an HR original")
