"""A trained model used on one's own photos: load, extract, search, export.

On the tiny trained workdir (conftest.py's `tiny_trained`):
- `load_model` rebuilds the student and the teacher from a workdir, an
  export (model.json) and a converted checkpoint (conversion.json), each
  giving the features the trained model gives; folders lacking what is
  needed are refused by name;
- README's "Search your own photos" and "Export" commands run as written
  (paths substituted) on photos in every mode: grayscale, RGBA, an
  EXIF-rotated one (each finds its RGB / upright twin at distance 0) and a
  corrupt one (listed and skipped);
- the exported artefact, loaded in a process that can import neither flax
  nor this project, gives the live model's features for 1 and 5 images.
"""

import json
import os
import re
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest
from PIL import Image

import tiny_setup as tiny
from pshrnet_jax import convert
from pshrnet_jax import errors
from pshrnet_jax import load_model
from pshrnet_jax.evaluation import features
from pshrnet_jax.evaluation import rerank
from pshrnet_jax.inference import gallery
from pshrnet_jax.models import factory
from pshrnet_jax.models import SRReID
from reference import torch_models as tr

_EXIF_ORIENTATION = 0x0112
_ROTATE_90_CW = 6  # Display by rotating the stored pixels 90 degrees clockwise.


def _readme_commands(section: str) -> list[str]:
  with open(os.path.join(tiny.REPO, "README.md")) as f:
    text = f.read()
  body = text.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
  return [l for l in body.splitlines()
          if l.startswith("python -m pshrnet_jax.")]


def _run(command: str, substitutions: dict[str, str]) -> str:
  for old, new in substitutions.items():
    command = command.replace(old, new)
  proc = subprocess.run(tiny.command_argv(command), cwd=tiny.REPO,
                        capture_output=True,
                        text=True, timeout=600,
                        env=dict(os.environ, JAX_PLATFORMS="cpu"))
  assert proc.returncode == 0, (command, proc.stderr[-3000:])
  return proc.stdout


@pytest.fixture(scope="module")
def photos(tiny_source, tmp_path_factory):
  """gallery/: RGB twins, a plain image and a corrupt file; query/: the
  same people as grayscale, RGBA and EXIF-rotated files."""
  base = tmp_path_factory.mktemp("photos")
  test_dir = os.path.join(tiny_source, "bounding_box_test")
  originals = [os.path.join(test_dir, n) for n in sorted(os.listdir(test_dir))]
  arrays = [np.asarray(Image.open(p).convert("RGB")) for p in originals[:4]]
  gallery_dir, query_dir = base / "gallery", base / "query"
  gallery_dir.mkdir()
  query_dir.mkdir()
  gray = np.asarray(Image.fromarray(arrays[1]).convert("L"))
  Image.fromarray(arrays[0]).save(gallery_dir / "a_plain.png")
  Image.fromarray(np.stack([gray] * 3, -1)).save(gallery_dir / "b_twin.png")
  Image.fromarray(arrays[2]).save(gallery_dir / "c_twin.png")
  Image.fromarray(arrays[3]).save(gallery_dir / "d_twin.png")
  (gallery_dir / "e_corrupt.jpg").write_bytes(b"not an image")
  Image.fromarray(gray, mode="L").save(query_dir / "b_gray.png")
  alpha = np.full(arrays[2].shape[:2] + (1,), 128, np.uint8)
  Image.fromarray(np.concatenate([arrays[2], alpha], -1), mode="RGBA").save(
      query_dir / "c_rgba.png")
  exif = Image.Exif()
  exif[_EXIF_ORIENTATION] = _ROTATE_90_CW
  Image.fromarray(arrays[3]).transpose(Image.Transpose.ROTATE_90).save(
      query_dir / "d_rotated.png", exif=exif)
  return {"gallery": str(gallery_dir), "query": str(query_dir)}


def _student_features(model, variables, info, paths):
  return features.features_from_images(model.apply, variables, paths,
                                       size=info.image_size, batch_size=8)


def test_load_model_from_each_kind_of_folder(tiny_trained, tmp_path):
  workdir = tiny_trained["workdir"]
  student_dir = os.path.join(workdir, "phase2", "student")
  probe = [os.path.join(root, n) for root, _, names in
           os.walk(os.path.join(workdir, "data")) for n in sorted(names)
           if n.endswith(".png")][:3]
  model, variables, info = load_model(workdir)
  assert (info.kind, info.path, info.image_size) == (
      "student", student_dir, tiny.IMAGE_SIZE)
  expected = _student_features(model, variables, info, probe)
  # The same student from its export alone.
  again = load_model(student_dir)
  np.testing.assert_array_equal(_student_features(*again, probe), expected)
  teacher, teacher_vars, teacher_info = load_model(workdir, which="teacher")
  assert teacher_info.kind == "teacher" and type(teacher).__name__ == (
      "HRNetReID")
  assert teacher_vars["params"]["head"]["fc2"]["kernel"].shape[-1] == (
      tiny.NUM_TRAIN_IDS)
  with pytest.raises(errors.ConfigError, match="holds a student, not a "
                     "teacher"):
    load_model(student_dir, which="teacher")
  bare = tmp_path / "bare"
  shutil.copytree(student_dir, bare)
  os.remove(bare / "model.json")
  with pytest.raises(errors.ConfigError,
                     match="neither model.json nor conversion.json"):
    load_model(bare)
  with pytest.raises(FileNotFoundError, match="no model folder"):
    load_model(tmp_path / "missing")


def test_load_model_from_a_converted_checkpoint(tmp_path):
  # A released-style PyTorch student, converted as the convert script does;
  # its forward pass equals PyTorch's (test_parity.py), so the same module
  # and variables are what matters here.
  net = tr.randomize(tr.HighResolutionNet(
      4, 6, (4, 8, 16, 32), reid=True, sr=tr.VDSR(2, 8)), 0)
  variables, module, info = convert.convert_checkpoint(
      {k: v.detach().numpy() for k, v in net.state_dict().items()},
      "student")
  convert.save_variables(variables, tmp_path / "converted", info)
  model, loaded, loaded_info = load_model(tmp_path / "converted")
  assert loaded_info.kind == "student" and model == module
  assert isinstance(model, SRReID) and model.reid.width == 4
  assert jax.tree.structure(loaded) == jax.tree.structure(variables)
  for a, b in zip(jax.tree.leaves(loaded), jax.tree.leaves(variables)):
    np.testing.assert_array_equal(a, b)
  # An ImageNet classifier is no re-ID model.
  classifier, _, info = convert.convert_checkpoint(
      {k: v.detach().numpy() for k, v in tr.randomize(
          tr.HighResolutionNet(4, 10, (4, 8, 16, 32)), 0).state_dict().items()},
      "hrnet")[::-1][::-1]
  convert.save_variables(classifier, tmp_path / "imagenet", info)
  with pytest.raises(errors.ConfigError, match="only re-ID models"):
    load_model(tmp_path / "imagenet")


def test_photos_in_any_mode_equal_their_rgb_twins(tiny_trained, photos):
  model, variables, info = load_model(tiny_trained["workdir"])
  query = gallery.embed(model, variables, info,
                        gallery.list_images(photos["query"]))
  twins = gallery.embed(model, variables, info, [
      os.path.join(photos["gallery"], n)
      for n in ("b_twin.png", "c_twin.png", "d_twin.png")])
  assert [os.path.basename(p) for p in query.paths] == [
      "b_gray.png", "c_rgba.png", "d_rotated.png"]
  np.testing.assert_allclose(query.features, twins.features, atol=1e-6)


def test_readme_search_commands_on_a_trained_workdir(tiny_trained, photos,
                                                     tmp_path):
  extract, search = _readme_commands("Search your own photos")
  workdir = tiny_trained["workdir"]
  subs = {"workdirs/demo/data/demo-source-seed0/bounding_box_test":
              photos["gallery"],
          "workdirs/demo/data/demo-seed0/lr/query/0003_c1s1_000041_01.png":
              os.path.join(photos["query"], "d_rotated.png"),
          "workdirs/gallery.npz": str(tmp_path / "gallery.npz"),
          "workdirs/search": str(tmp_path / "search"),
          "workdirs/demo": workdir}
  out = _run(extract, subs)
  assert re.search(r"skipped .*e_corrupt\.jpg", out)
  feats, paths, meta = gallery.load_features(str(tmp_path / "gallery.npz"))
  assert [os.path.basename(p) for p in paths] == [
      "a_plain.png", "b_twin.png", "c_twin.png", "d_twin.png"]
  assert feats.shape[0] == 4 and meta["kind"] == "student"
  out = _run(search, subs)
  table = out.split("query ", 1)[1].splitlines()
  assert "d_twin.png" in table[2]  # Rank 1: the upright twin,
  assert float(table[2].split()[1]) < 1e-5  # at distance 0.
  with open(tmp_path / "search" / "search.json") as f:
    report = json.load(f)
  assert report["queries"][0]["matches"][0]["path"].endswith("d_twin.png")
  assert len(report["queries"][0]["matches"]) == 4  # top_k 10, clipped.
  with Image.open(tmp_path / "search" / "ranked_list.png") as image:
    assert image.width > 4 * tiny.IMAGE_SIZE[1]


_JAX_ONLY = r"""
import importlib.abc, json, sys
class Refuse(importlib.abc.MetaPathFinder):
  def find_spec(self, name, path=None, target=None):
    if name.split(".")[0] in ("flax", "pshrnet_jax", "optax", "orbax"):
      raise ImportError(f"{name} must not be needed")
sys.meta_path.insert(0, Refuse())
import jax, numpy as np
with open(sys.argv[1], "rb") as f:
  extractor = jax.export.deserialize(f.read())
images = np.load(sys.argv[2])
out = {}
for n in (1, 5):
  feats, sr = extractor.call(images[:n])
  out[f"features{n}"] = np.asarray(feats)
  out[f"sr{n}"] = np.asarray(sr)
np.savez(sys.argv[3], **out)
print("flax" in sys.modules, "pshrnet_jax" in sys.modules)
"""


def test_export_runs_with_jax_alone_and_matches_the_model(tiny_trained,
                                                          tmp_path):
  command, = [c for c in _readme_commands("Export") if "--format" not in c]
  out_dir = tmp_path / "exported"
  _run(command, {"workdirs/demo": tiny_trained["workdir"],
                 "workdirs/exported": str(out_dir)})
  with open(out_dir / "feature_extractor.json") as f:
    description = json.load(f)
  assert description["input"]["shape"] == ["batch", *tiny.IMAGE_SIZE, 3]
  images = np.random.default_rng(1).integers(
      0, 256, (5, *tiny.IMAGE_SIZE, 3), dtype=np.uint8)
  np.save(tmp_path / "images.npy", images)
  script = tmp_path / "jax_only.py"
  script.write_text(_JAX_ONLY)
  proc = subprocess.run(
      [sys.executable, str(script), str(out_dir / "feature_extractor.jax"),
       str(tmp_path / "images.npy"), str(tmp_path / "out.npz")],
      cwd=str(tmp_path), capture_output=True, text=True, timeout=300,
      env=dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=""))
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert proc.stdout.split() == ["False", "False"]
  model, variables, _ = load_model(tiny_trained["workdir"])
  expected = features.make_feature_fn(model.apply)(variables, images)[0]
  with np.load(tmp_path / "out.npz") as got:
    for n in (1, 5):
      err = (np.linalg.norm(got[f"features{n}"] - expected[:n])
             / np.linalg.norm(expected[:n]))
      assert err < 1e-5, (n, err)
      assert got[f"sr{n}"].shape == (n, *tiny.IMAGE_SIZE, 3)
  assert factory.describe(model)["model"] == description["model"]["model"]


def test_search_with_rerank_ranks_by_the_reranked_distances():
  rng = np.random.default_rng(3)
  q = rng.normal(size=(7, 16)).astype(np.float32)
  g = rng.normal(size=(30, 16)).astype(np.float32)
  q /= np.linalg.norm(q, axis=1, keepdims=True)
  g /= np.linalg.norm(g, axis=1, keepdims=True)
  params = dict(k1=5, k2=3, lambda_value=0.3)
  indices, distances = gallery.search(q, g, 4, rerank=params)
  dense = rerank.re_ranking_features(q, g, **params)
  expected = np.argsort(dense, axis=1, kind="stable")[:, :4]
  np.testing.assert_array_equal(indices, expected)
  np.testing.assert_allclose(distances,
                             np.take_along_axis(dense, expected, 1))
  plain, _ = gallery.search(q, g, 4)
  assert not np.array_equal(plain, indices)  # Re-ranking changed the order.
