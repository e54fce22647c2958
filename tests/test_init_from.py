"""Where phase 1 starts from: benchmark configs refuse random weights unless
asked for (`--config.init_from=none`), and ImageNet weights of the
configured extractor (HRNet-W*-C, or torchvision's ResNet-50) are loaded.

The refusal is checked before anything is read or written; the command-line
form (one FATAL line) is in test_bad_input.py.
"""

import glob
import os

import jax
import numpy as np
import pytest
import torch

import tiny_setup as tiny
from pshrnet_jax import config_checks
from pshrnet_jax import driver
from pshrnet_jax import errors
from pshrnet_jax.convert import load_torch_resnet
from pshrnet_jax.models import factory
from pshrnet_jax.training import initialization
from pshrnet_jax.training import phases

from reference import torch_ablations as ta
from reference import torch_models as tr

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCHMARK_CONFIGS = sorted(
    os.path.basename(p)[:-3] for p in glob.glob(os.path.join(REPO, "configs",
                                                             "*.py"))
    if os.path.basename(p) not in ("__init__.py", "base.py", "demo.py"))


def _shapes(model):
  return factory.abstract_variables(model, (1, *tiny.IMAGE_SIZE, 3))


def _config(name, **overrides):
  module = __import__(f"configs.{name}", fromlist=["get_config"])
  return tiny.set_dotted(module.get_config(), **overrides)


@pytest.mark.parametrize("name", BENCHMARK_CONFIGS)
def test_benchmark_configs_refuse_random_weights_by_accident(name):
  with pytest.raises(errors.ConfigError,
                     match=r"^phase 1 \(the teacher\).*HRNet-W32-C.*"
                     r"--config\.init_from is not set.*--kind=hrnet.*"
                     r"--config\.init_from=none"):
    initialization.check_init_from(_config(name))
  # On purpose, with weights, or when no phase needs them: accepted.
  for overrides in ({"init_from": "none"}, {"init_from": "/w/hrnet_w32"},
                    {"mode": "eval"},
                    {"mode": "phase2", "student_init": "teacher"}):
    initialization.check_init_from(_config(name, **overrides))


def test_what_needs_the_weights_is_named():
  with pytest.raises(errors.ConfigError,
                     match=r"^phase 2's student extractor \(student_init="
                     r"imagenet\) should start"):
    initialization.check_init_from(_config("mlr_viper", mode="phase2"))
  # HR-only configs have no phase 2.
  initialization.check_init_from(_config("hr_market1501", mode="phase2"))
  with pytest.raises(errors.ConfigError,
                     match=r"torchvision ResNet-50.*--kind=resnet50"):
    initialization.check_init_from(_config(
        "caviar", **{"model.backbone": "resnet50"}))
  # The demo (and the tests) train from random weights without asking.
  initialization.check_init_from(_config("demo"))
  with pytest.raises(errors.ConfigError, match=r"model\.sr_module='edsr'"):
    config_checks.check_config(_config("demo", **{"model.sr_module": "edsr"}))


def test_driver_refuses_before_reading_or_writing(tmp_path):
  config = tiny.tiny_config("/nonexistent")
  config.unlock()
  config.init_from_required = True
  workdir = str(tmp_path / "workdir")
  with pytest.raises(errors.ConfigError, match="init_from"):
    driver.run(config, workdir)
  assert not os.path.exists(workdir)  # Not even config.json.


def test_resnet50_starts_from_torchvision_weights(tmp_path):
  torch_model = tr.randomize(ta.ResNet(num_classes=10, width=4,
                                       blocks=(1, 1, 1, 1)), seed=8)
  path = str(tmp_path / "resnet.pth")
  torch.save(torch_model.state_dict(), path)
  imagenet = load_torch_resnet(path)
  config = tiny.config_with("", **{"model.backbone": "resnet50",
                                   "init_from": path})
  teacher = factory.build_teacher(config.model, tiny.NUM_TRAIN_IDS)
  random = tiny.init_variables(teacher, config.seed)
  got = initialization.initial_variables(
      config, phases.TEACHER, teacher, _shapes(teacher), str(tmp_path))
  same = lambda a, b: jax.tree.all(jax.tree.map(np.array_equal, a, b))
  for collection in ("params", "batch_stats"):
    assert same(got[collection]["backbone"], imagenet[collection]["backbone"])
    assert same(got[collection]["head"], random[collection]["head"])
  # Phase 2: the student's extractor from the same weights, SR from scratch.
  config = tiny.config_with("", **{"model.backbone": "resnet50",
                                   "model.sr_module": "srcnn",
                                   "init_from": path})
  student = factory.build_student(config.model, tiny.NUM_TRAIN_IDS)
  got = initialization.initial_variables(
      config, phases.STUDENT, student, _shapes(student), str(tmp_path))
  assert same(got["params"]["reid"]["backbone"], imagenet["params"]["backbone"])
  random = tiny.init_variables(student, config.seed)
  assert same(got["params"]["sr"], random["params"]["sr"])
  # --config.init_from=none: the random initialisation itself.
  config = tiny.config_with("", **{"model.backbone": "resnet50",
                                   "init_from": "none"})
  got = initialization.initial_variables(
      config, phases.TEACHER, teacher, _shapes(teacher), str(tmp_path))
  assert same(got, tiny.init_variables(teacher, config.seed))


def test_student_starts_from_the_teacher_it_is_given(tmp_path):
  """`student_init=teacher`: the student's extractor is the teacher's
  variables (here passed in, as the loop does; the workdir has none)."""
  config = tiny.config_with("", student_init="teacher")
  teacher = factory.build_teacher(config.model, tiny.NUM_TRAIN_IDS)
  teacher_vars = tiny.init_variables(teacher, config.seed + 7)
  student = factory.build_student(config.model, tiny.NUM_TRAIN_IDS)
  got = initialization.initial_variables(
      config, phases.STUDENT, student, _shapes(student), str(tmp_path),
      teacher_vars)
  same = lambda a, b: jax.tree.all(jax.tree.map(np.array_equal, a, b))
  for collection in ("params", "batch_stats"):
    for part in ("backbone", "incre_modules"):
      assert same(got[collection]["reid"][part],
                  teacher_vars[collection][part])
  random = tiny.init_variables(student, config.seed)
  assert same(got["params"]["sr"], random["params"]["sr"])
  assert not same(got["params"]["reid"]["backbone"],
                  random["params"]["reid"]["backbone"])
