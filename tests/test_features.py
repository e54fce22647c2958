"""Feature extraction: normalisation, flip-sum, L2 norm, padding, own photos."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from pshrnet_jax.evaluation import features
from pshrnet_jax.models import inputs

_SIZE = (4, 2)  # Tiny network input (height, width).
_MEAN = np.array(inputs.IMAGENET_MEAN)
_STD = np.array(inputs.IMAGENET_STD)


class TinyReID(nn.Module):
  """Satisfies the model contract: (logits, aux) with feature and sr."""

  @nn.compact
  def __call__(self, x, train=False):
    del train
    feature = nn.Dense(5, use_bias=False)(x.reshape(x.shape[0], -1))
    return feature[:, :2], {"feature": feature, "sr": 2.0 * x}


@pytest.fixture(scope="module")
def model():
  module = TinyReID()
  variables = module.init(jax.random.PRNGKey(0),
                          jnp.zeros((1,) + _SIZE + (3,)))
  fn = features.make_feature_fn(module.apply)
  return module, variables, fn


def _numpy_features(images, kernel):
  x = (images.astype(np.float64) / 255.0 - _MEAN) / _STD
  f = (x.reshape(len(x), -1) @ kernel +
       x[:, :, ::-1].reshape(len(x), -1) @ kernel)
  return f / np.linalg.norm(f, axis=1, keepdims=True)


def test_normalize_images_by_hand():
  out = np.asarray(inputs.normalize_images(
      np.array([[[[255, 0, 128]]]], np.uint8)))
  expected = [(1 - 0.485) / 0.229, -0.456 / 0.224, (128 / 255 - 0.406) / 0.225]
  np.testing.assert_allclose(out[0, 0, 0], expected, rtol=1e-6)


def test_flip_sum_normalised_and_padded(model):
  module, variables, fn = model
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (5,) + _SIZE + (3,), dtype=np.uint8)
  batches = [{"image": images[:3]}, {"image": images[3:]}]
  feats, sr = features.extract_features(module.apply, variables, batches,
                                        batch_size=3, return_sr=True)
  kernel = np.asarray(variables["params"]["Dense_0"]["kernel"], np.float64)
  np.testing.assert_allclose(feats, _numpy_features(images, kernel),
                             atol=1e-5)
  np.testing.assert_allclose(np.linalg.norm(feats, axis=1), 1.0, rtol=1e-6)
  # SR output (2x the normalised input here) de-normalised to [0, 1].
  x = (images / 255.0 - _MEAN) / _STD
  np.testing.assert_allclose(sr, np.clip(2 * x * _STD + _MEAN, 0, 1),
                             atol=1e-5)


def test_own_photos_are_resized_and_ranked(model, tmp_path):
  module, variables, _ = model
  rng = np.random.default_rng(1)
  big = rng.integers(0, 256, (40, 20, 3), dtype=np.uint8)
  path = str(tmp_path / "photo.png")
  Image.fromarray(big).save(path)
  resized = np.asarray(Image.fromarray(big).resize((2, 4), Image.BILINEAR))
  gallery = rng.integers(0, 256, (3,) + _SIZE + (3,), dtype=np.uint8)
  feats = features.features_from_images(
      module.apply, variables, [path, big, gallery[0], gallery[1]],
      batch_size=2, size=_SIZE)
  kernel = np.asarray(variables["params"]["Dense_0"]["kernel"], np.float64)
  expected = _numpy_features(
      np.stack([resized, resized, gallery[0], gallery[1]]), kernel)
  np.testing.assert_allclose(feats, expected, atol=1e-5)
  indices, distances = features.rank_gallery(feats[:1], feats[1:], top_k=2)
  # The array copy of the photo is identical: distance 0, rank 1.
  assert indices[0, 0] == 0
  assert distances[0, 0] == pytest.approx(0.0, abs=1e-5)
  np.testing.assert_allclose(distances[0],
                             np.sort(1 - feats[1:] @ feats[0])[:2], atol=1e-6)


def test_rank_gallery_by_hand():
  q = np.array([[1.0, 0.0]])
  g = np.array([[0.0, 1.0], [0.6, 0.8], [1.0, 0.0], [0.8, 0.6]])
  indices, distances = features.rank_gallery(q, g, top_k=3)
  np.testing.assert_array_equal(indices, [[2, 3, 1]])
  np.testing.assert_allclose(distances, [[0.0, 0.2, 0.4]], atol=1e-6)


def test_bad_inputs(model, tmp_path):
  module, variables, fn = model
  with pytest.raises(FileNotFoundError, match="missing.jpg"):
    features.load_image(str(tmp_path / "missing.jpg"))
  with pytest.raises(ValueError, match="uint8"):
    features.load_image(np.zeros((4, 2, 3), np.float32))
  with pytest.raises(ValueError, match="more than batch_size"):
    features.extract_features(
        module.apply, variables,
        [{"image": np.zeros((4,) + _SIZE + (3,), np.uint8)}], batch_size=3)
  with pytest.raises(ValueError, match="no 'image' key"):
    features.extract_features(module.apply, variables, [{"img": None}],
                              batch_size=3)
