"""Shapes, parameter counts, initialisation and pooling of the Flax models.

Full-size models go through `jax.eval_shape` only (no compute); pooling is
checked against PyTorch's adaptive pooling on uneven sizes.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

torch.set_num_threads(1)  # See test_parity.py: two threads thrash here.

from pshrnet_jax import convert
from pshrnet_jax.models import HRNetClassifier
from pshrnet_jax.models import HRNetReID
from pshrnet_jax.models import SRReID
from pshrnet_jax.models import VDSRCA
from pshrnet_jax.models import reid_head
from pshrnet_jax import errors
from pshrnet_jax.training import initialization

TINY = dict(width=4, head_planes=(4, 8, 8, 16))
# As TINY, one HR module per stage of one block: for checks that do not
# depend on HRNet's depth (tracing the full depth costs seconds).
SHALLOW = dict(TINY, num_modules=(1, 1, 1), num_blocks=1)


def _student(num_classes, sr_module="vdsr_ca", sr_blocks=18, sr_features=64,
             **hrnet):
  """The paper's student (VDSR-CA, then HRNet-ReID) at any size."""
  sr = None if sr_module == "none" else VDSRCA(
      sr_blocks, sr_features, channel_attention=sr_module == "vdsr_ca")
  return SRReID(reid=HRNetReID(num_classes=num_classes, **hrnet), sr=sr)


def _shapes(module, shape, **kwargs):
  return jax.eval_shape(lambda: module.init(
      jax.random.key(0), jnp.zeros(shape), **kwargs))


def _count(tree) -> int:
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(tree)))


@pytest.fixture(scope="module")
def w32_classifier_shapes():
  return _shapes(HRNetClassifier(width=32, num_classes=1000), (1, 64, 64, 3),
                 train=False)


@pytest.fixture(scope="module")
def w32_reid():
  model = HRNetReID(width=32, num_classes=751)
  variables = _shapes(model, (1, 64, 64, 3), train=False)
  out = jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables,
                       jax.ShapeDtypeStruct((2, 256, 128, 3), jnp.float32))
  return variables, out


def test_hrnet_w32_c_parameter_counts(w32_classifier_shapes):
  params = w32_classifier_shapes["params"]
  assert _count(params) == 41_232_680
  assert _count(params["backbone"]) + _count(params["incre_modules"]) == 30_881_856


def test_vdsr_parameter_counts():
  assert _count(_shapes(VDSRCA(), (1, 8, 8, 3))["params"]) == 677_448
  # Without channel attention: 18 x (64*4+4 + 4*64+64) = 10,440 fewer.
  plain = VDSRCA(channel_attention=False)
  assert _count(_shapes(plain, (1, 8, 8, 3))["params"]) == 667_008


def test_channel_attention_size_both_readings():
  # As training builds VDSR-CA from the config. Without attention: 667,008
  # (above); each of the 18 blocks adds 64c + c + c*64 + 64 for c squeeze
  # channels: c = 16 (the paper's r = 4 as RCAN's ratio) 2,128, c = 4 (the
  # released layout) 580.
  from configs import base  # pylint: disable=g-import-not-at-top
  from pshrnet_jax.models import factory  # pylint: disable=g-import-not-at-top
  found = {}
  for preset in ("paper", "released_code"):
    config = base.get_base_config(preset)
    params = _shapes(factory.build_sr(config.model), (1, 8, 8, 3))["params"]
    found[preset] = (config.model.ca_reduction, _count(params),
                     params["block_17_ca"]["squeeze"]["kernel"].shape)
  assert found == {"paper": (4, 667_008 + 18 * 2_128, (1, 1, 64, 16)),
                   "released_code": (16, 677_448, (1, 1, 64, 4))}
  assert 667_008 + 18 * 2_128 == 705_312


@pytest.mark.parametrize("value,words", [
    (3, ["ca_reduction=3", "does not divide", "sr_features=8"]),
    (0, ["ca_reduction=0", "integer >= 1"])])
def test_channel_attention_reduction_is_checked(value, words):
  import tiny_setup  # pylint: disable=g-import-not-at-top
  from pshrnet_jax import config_checks  # pylint: disable=g-import-not-at-top
  config = tiny_setup.config_with("/data", **{"model.ca_reduction": value})
  with pytest.raises(errors.ConfigError) as info:
    config_checks.check_config(config)
  for word in words:
    assert word in str(info.value), (word, str(info.value))


def test_reid_head_and_sequence_lengths(w32_reid):
  variables, (logits, aux) = w32_reid
  # add_block (Linear 6144->512, BN1d 512) + classifier (Linear 512->751).
  assert _count(variables["params"]["head"]) == 3_532_527
  lengths = {k: aux[k].shape for k in
             ("seq1", "seq2", "seq3", "seq4", "seq5", "l_f", "feature")}
  assert lengths == {"seq1": (2, 2048), "seq2": (2, 1024), "seq3": (2, 2048),
                     "seq4": (2, 1024), "seq5": (2, 6144), "l_f": (2, 512),
                     "feature": (2, 6656)}
  assert logits.shape == aux["logits"].shape == (2, 751)


def test_reid_paths_match_the_classifier(w32_classifier_shapes, w32_reid):
  cls_vars, (reid_vars, _) = w32_classifier_shapes, w32_reid
  for collection in ("params", "batch_stats"):
    for name in ("backbone", "incre_modules"):
      a = jax.tree_util.tree_leaves_with_path(cls_vars[collection][name])
      b = jax.tree_util.tree_leaves_with_path(reid_vars[collection][name])
      assert [(p, x.shape) for p, x in a] == [(p, x.shape) for p, x in b]


def _init_with_output(model, x):
  """((logits, aux), variables) of `model.init` on `x`, shapes only."""
  return jax.eval_shape(lambda x: model.init_with_output(
      jax.random.key(0), x, train=False), x)


def test_student_layout_and_sr_options():
  # The SR options do not depend on HRNet's depth: one module per stage.
  x = jax.ShapeDtypeStruct((1, 64, 32, 3), jnp.float32)
  for sr_module, sr_params in (("vdsr_ca", 677_448), ("vdsr", 667_008),
                               ("none", 0)):
    model = _student(5, sr_module, **SHALLOW)
    (_, aux), variables = _init_with_output(model, x)
    assert set(variables["params"]) == ({"reid"} | ({"sr"} if sr_params else set()))
    assert _count(variables["params"].get("sr", {})) == sr_params
    assert aux["sr"].shape == (1, 64, 32, 3)


def test_bfloat16_compute_keeps_float32_params_and_outputs():
  model = HRNetReID(num_classes=5, dtype=jnp.bfloat16, **SHALLOW)
  x = jax.ShapeDtypeStruct((1, 64, 32, 3), jnp.float32)
  (_, aux), variables = _init_with_output(model, x)
  assert {a.dtype for a in jax.tree.leaves(variables)} == {jnp.dtype("float32")}
  assert {a.dtype for a in aux.values()} == {jnp.dtype("float32")}


def test_input_size_must_be_a_multiple_of_32():
  with pytest.raises(ValueError, match=r"multiples of 32.*\(1, 100, 64, 3\)"):
    _shapes(HRNetClassifier(width=4), (1, 100, 64, 3), train=False)


def test_initialisation_laws():
  sr = VDSRCA().init(jax.random.key(1), jnp.zeros((1, 8, 8, 3)))["params"]
  kernel = np.asarray(sr["block_3_conv"]["kernel"])  # 3x3x64x64
  assert kernel.std() == pytest.approx(np.sqrt(2 / (9 * 64)), rel=0.02)
  assert abs(kernel.mean()) < 3e-3
  xs = [jnp.zeros((1, s, s, c)) for s, c in ((4, 128), (2, 256), (2, 512),
                                             (1, 1024))]
  head = reid_head.ReIDHead(num_classes=751).init(jax.random.key(2), xs)
  params = head["params"]
  assert params["fc1"]["kernel"].shape == (6144, 512)
  assert np.std(params["fc1"]["kernel"]) == pytest.approx(np.sqrt(2 / 512), rel=0.02)
  assert np.std(params["fc2"]["kernel"]) == pytest.approx(0.001, rel=0.05)
  assert np.mean(params["bn"]["scale"]) == pytest.approx(1.0, abs=0.01)
  assert np.std(params["bn"]["scale"]) == pytest.approx(0.02, rel=0.2)
  assert not np.any(params["fc1"]["bias"]) and not np.any(params["bn"]["bias"])


def test_the_loops_initial_variables_are_model_init_values():
  # initialization.random_variables runs only the initialisers (lazy_init);
  # the values must be those of model.init on a dummy batch.
  model = _student(5, sr_blocks=2, sr_features=8, num_modules=(1, 1, 1),
                   num_blocks=1, **TINY)
  expected = model.init(jax.random.key(3), jnp.zeros((1, 64, 32, 3)),
                        train=False)
  got = initialization.random_variables(model, 3, (64, 32))
  assert jax.tree.structure(got) == jax.tree.structure(dict(expected))
  for e, g in zip(jax.tree.leaves(dict(expected)), jax.tree.leaves(got)):
    np.testing.assert_array_equal(g, e)


@pytest.mark.parametrize("size,out", [((7, 5), 4), ((3, 3), 2), ((9, 6), 4),
                                      ((8, 4), 2), ((5, 3), 1)])
@pytest.mark.parametrize("mode", ["avg", "max"])
def test_adaptive_pool_matches_torch(size, out, mode):
  x = np.random.RandomState(0).randn(2, 3, *size).astype(np.float32)
  fn = F.adaptive_avg_pool2d if mode == "avg" else F.adaptive_max_pool2d
  want = fn(torch.from_numpy(x), out).numpy().transpose(0, 2, 3, 1)
  got = reid_head.adaptive_pool(jnp.asarray(x.transpose(0, 2, 3, 1)), out, mode)
  np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("pooling", ["avg", "max", "avgmax"])
def test_pool_branch_flattens_channel_major(pooling):
  x = np.random.RandomState(1).randn(2, 6, 10, 6).astype(np.float32)  # NCHW
  t = torch.from_numpy(x)
  avg, mx = F.adaptive_avg_pool2d(t, 4), F.adaptive_max_pool2d(t, 4)
  want = {"avg": avg, "max": mx, "avgmax": avg + 0.5 * mx}[pooling]
  got = reid_head.pool_branch(jnp.asarray(x.transpose(0, 2, 3, 1)), 4, 0.5,
                              pooling)
  np.testing.assert_allclose(got, want.reshape(2, -1).numpy(), rtol=1e-6,
                             atol=1e-6)


def test_bad_pooling_name():
  x = jnp.zeros((1, 64, 32, 3))
  with pytest.raises(ValueError, match="'mean'"):
    HRNetReID(pooling="mean", **SHALLOW).init(jax.random.key(0), x)


def _numbered(shapes, offset):
  """Concrete arrays whose values say which tree they came from."""
  leaves, treedef = jax.tree.flatten(shapes)
  return jax.tree.unflatten(treedef, [np.full(l.shape, offset + i, np.float32)
                                      for i, l in enumerate(leaves)])


def test_reid_from_imagenet_and_student_from_teacher():
  x = (1, 64, 32, 3)
  depth = {k: SHALLOW[k] for k in ("num_modules", "num_blocks")}
  cls = _numbered(_shapes(HRNetClassifier(width=4, num_classes=3,
                                          head_planes=TINY["head_planes"],
                                          final_features=8, **depth), x), 1000)
  reid = _numbered(_shapes(HRNetReID(num_classes=5, **SHALLOW), x), 5000)
  out = convert.reid_from_imagenet(cls, reid)
  for col in ("params", "batch_stats"):
    for name in ("backbone", "incre_modules"):
      assert jax.tree.all(jax.tree.map(np.array_equal, out[col][name],
                                       cls[col][name]))
  assert jax.tree.all(jax.tree.map(np.array_equal, out["params"]["head"],
                                   reid["params"]["head"]))
  assert reid["params"]["backbone"]["conv1"]["kernel"].flat[0] >= 5000  # Untouched.

  student = _numbered(_shapes(_student(5, sr_blocks=2, **SHALLOW), x), 9000)
  new = convert.student_from_teacher(out, student)
  assert jax.tree.all(jax.tree.map(np.array_equal, new["params"]["reid"]["backbone"],
                                   cls["params"]["backbone"]))
  assert jax.tree.all(jax.tree.map(np.array_equal, new["batch_stats"]["reid"]["incre_modules"],
                                   cls["batch_stats"]["incre_modules"]))
  for kept in (new["params"]["sr"], new["params"]["reid"]["head"]):
    assert min(float(a.min()) for a in jax.tree.leaves(kept)) >= 9000

  wider = _numbered(_shapes(HRNetClassifier(width=8, num_classes=3,
                                            head_planes=TINY["head_planes"],
                                            final_features=8, **depth), x), 0)
  with pytest.raises(errors.ConversionError,
                     match=r"params/backbone\['conv1'\]|params/backbone.*shape"):
    convert.reid_from_imagenet(wider, reid)


# --- The ablation models built from a config (models/factory.py) ----------

_ABLATION_SR = {  # sr_module -> parameters of the tiny config's SR network
    # VDSR 2 blocks x 8 channels: input 3x3x3x8, 2 x 3x3x8x8, output
    # 3x3x8x3 (no biases); attention adds 2 x (8*4+4 + 4*8+8).
    "vdsr_ca": 216 + 2 * 576 + 216 + 2 * 76,
    "vdsr": 216 + 2 * 576 + 216,
    # SRCNN (8, 4): 9x9x3x8+8, 5x5x8x4+4, 5x5x4x3+3.
    "srcnn": 1952 + 804 + 303,
    # RCAN 1 group x 1 block, 8 channels, r=4: head, 2 RCAB convs + CA
    # (8->2->8), group conv, body conv, tail.
    "rcan": 224 + 2 * 584 + 18 + 24 + 584 + 584 + 219,
    "bicubic": 0, "none": 0}


# The SR module in front of an extractor is independent of it: every SR
# module with the (cheap to trace) resnet50, one with each HRNet head.
@pytest.mark.parametrize("backbone,head,sr_modules", [
    ("resnet50", "reid", tuple(_ABLATION_SR)),
    ("hrnet", "reid", ("rcan",)), ("hrnet", "imagenet", ("srcnn",))])
def test_every_extractor_with_every_sr_module(backbone, head, sr_modules):
  import tiny_setup  # pylint: disable=g-import-not-at-top
  from pshrnet_jax.models import factory  # pylint: disable=g-import-not-at-top
  x = jax.ShapeDtypeStruct((2, 64, 32, 3), jnp.float32)
  hrnet_reid = backbone == "hrnet" and head == "reid"
  seqs = {f"seq{n}" for n in range(1, 6)} if hrnet_reid else {"seq5"}
  for sr_module in sr_modules:
    sr_params = _ABLATION_SR[sr_module]
    config = tiny_setup.config_with("", **{
        "model.backbone": backbone, "model.head": head,
        "model.sr_module": sr_module})
    student = factory.build_student(config.model, 5)
    (_, aux), variables = _init_with_output(student, x)
    assert set(variables["params"]) == {"reid"} | (
        {"sr"} if sr_params else set()), sr_module
    assert _count(variables["params"].get("sr", {})) == sr_params, sr_module
    assert student.has_sr_network == bool(sr_params)
    assert {k for k in aux if k.startswith("seq")} == seqs
    width = aux["seq5"].shape[1]
    assert aux["feature"].shape == (2, width + 512)
    assert aux["sr"].shape == (2, 64, 32, 3)
    assert factory.lr_interpolation(config) == (
        "bicubic" if sr_module == "bicubic" else "bilinear")
  teacher = factory.build_teacher(config.model, 5)
  assert teacher == student.reid  # The student's extractor is the teacher's.


def test_factory_rejects_unknown_choices():
  import tiny_setup  # pylint: disable=g-import-not-at-top
  from pshrnet_jax.models import factory  # pylint: disable=g-import-not-at-top
  for field, value in (("backbone", "vgg"), ("head", "bnneck"),
                       ("sr_module", "esrgan")):
    config = tiny_setup.config_with("", **{f"model.{field}": value})
    with pytest.raises(errors.ConfigError,
                       match=rf"--config\.model\.{field}='{value}'"):
      factory.check_model_config(config.model)
  config = tiny_setup.config_with("", **{"model.backbone": "resnet50",
                                         "model.head": "imagenet"})
  with pytest.raises(errors.ConfigError,
                     match=r"the resnet50 extractor has the heads \('reid',\)"):
    factory.check_model_config(config.model)
  factory.check_model_config(tiny_setup.tiny_config().model)  # Accepted.


def test_imagenet_weights_into_the_ablation_extractors():
  from pshrnet_jax.models import ResNet50Classifier  # pylint: disable=g-import-not-at-top
  from pshrnet_jax.models import ResNet50ReID  # pylint: disable=g-import-not-at-top
  x = (1, 64, 32, 3)
  depth = {k: SHALLOW[k] for k in ("num_modules", "num_blocks")}
  cls = _numbered(_shapes(HRNetClassifier(width=4, num_classes=3,
                                          head_planes=TINY["head_planes"],
                                          **depth), x, train=False), 1000)
  reid = _numbered(_shapes(HRNetReID(num_classes=5, head_kind="imagenet",
                                     **SHALLOW), x, train=False), 5000)
  out = convert.reid_from_imagenet(cls, reid)
  copied = {"backbone", "incre_modules", "final_layer", "downsamp_modules_0",
            "downsamp_modules_1", "downsamp_modules_2"}
  for col in ("params", "batch_stats"):
    assert set(out[col]) == copied | {"head"}
    for name in copied:
      assert jax.tree.all(jax.tree.map(np.array_equal, out[col][name],
                                       cls[col][name])), (col, name)
    assert out[col]["head"] is reid[col]["head"]
  resnet = _numbered(_shapes(ResNet50Classifier(10, 4, (1, 1, 1, 1)), x,
                             train=False), 0)
  resnet_reid = _numbered(_shapes(ResNet50ReID(5, 4, (1, 1, 1, 1)), x,
                                  train=False), 7000)
  out = convert.reid_from_imagenet(resnet, resnet_reid)
  assert out["params"]["backbone"] is resnet["params"]["backbone"]
  assert out["batch_stats"]["head"] is resnet_reid["batch_stats"]["head"]
  with pytest.raises(errors.ConversionError,
                     match=r"params/backbone\['bn2'\]\['bias'\] is only in "
                     "the target"):
    convert.reid_from_imagenet(resnet, reid)
