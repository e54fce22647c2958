"""Tests for convert.torch_io: files written by torch.save, read without it.

torch is a test-only dependency here: it writes the files (zip and legacy
formats) and is the reference every array is compared with, exactly.
"""

import argparse
import builtins
import collections
import io
import os
import pickle
import struct
import tarfile
import zipfile

import ml_dtypes
import numpy as np
import pytest
import torch

from pshrnet_jax.convert import torch_io
from pshrnet_jax import errors

FORMATS = ("zip", "legacy")
_NUMPY_DTYPE = {
    torch.float32: np.float32, torch.float64: np.float64,
    torch.float16: np.float16, torch.bfloat16: ml_dtypes.bfloat16,
    torch.int64: np.int64, torch.int32: np.int32, torch.int16: np.int16,
    torch.int8: np.int8, torch.uint8: np.uint8, torch.bool: np.bool_,
    torch.complex64: np.complex64, torch.uint16: np.uint16,
}


def _save(obj, path, fmt):
  torch.save(obj, path, _use_new_zipfile_serialization=(fmt == "zip"))
  return path


def _assert_same(array, tensor):
  """Exact agreement in dtype, shape and every value (bit-exact for floats)."""
  tensor = tensor.detach()
  assert isinstance(array, np.ndarray)
  assert array.dtype == np.dtype(_NUMPY_DTYPE[tensor.dtype])
  assert array.shape == tuple(tensor.shape)
  if tensor.dtype == torch.bfloat16:
    expected = tensor.contiguous().view(torch.int16).numpy()
    np.testing.assert_array_equal(array.view(np.int16), expected)
  else:
    np.testing.assert_array_equal(array, tensor.numpy())


def _all_dtypes():
  gen = torch.Generator().manual_seed(0)
  floats = torch.randn(2, 3, generator=gen)
  ints = torch.randint(-100, 100, (5,), generator=gen)
  return {
      "f32": floats, "f64": floats.double() * 1e-200,
      "f16": floats.half(), "bf16": (floats * 3).bfloat16(),
      "i64": ints * 10**12, "i32": ints.int() * 10**6, "i16": ints.short(),
      "i8": ints.to(torch.int8), "u8": (ints + 100).to(torch.uint8),
      "bool": ints > 0, "c64": torch.complex(floats, -floats),
      "u16": (ints + 100).to(torch.uint16) * 300,  # _rebuild_tensor_v3 path.
      "scalar": torch.tensor(2.5), "scalar_long": torch.tensor(7),
      "empty": torch.empty(0, 3), "empty_long": torch.zeros(4, 0).long(),
  }


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_dtype_round_trips_exactly(tmp_path, fmt):
  tensors = _all_dtypes()
  loaded = torch_io.load_state_dict(_save(tensors, tmp_path / "a.pth", fmt))
  assert list(loaded) == list(tensors)
  for name, tensor in tensors.items():
    _assert_same(loaded[name], tensor)
  assert loaded["scalar"].shape == () and loaded["scalar"] == 2.5
  assert loaded["bf16"].dtype == np.dtype(ml_dtypes.bfloat16)


@pytest.mark.parametrize("fmt", FORMATS)
def test_views_and_shared_storage(tmp_path, fmt):
  base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
  views = {"base": base, "transposed": base.t(), "strided": base[1:3, ::2],
           "row": base[2], "diagonal": base.diagonal(offset=1)}
  loaded = torch_io.load_state_dict(_save(views, tmp_path / "v.pth", fmt))
  for name, tensor in views.items():
    _assert_same(loaded[name], tensor)
  np.testing.assert_array_equal(loaded["strided"], [[6, 8, 10], [12, 14, 16]])
  np.testing.assert_array_equal(loaded["diagonal"], [1, 8, 15, 22])
  # One storage on disk, independent arrays in memory.
  assert not np.shares_memory(loaded["base"], loaded["row"])
  loaded["base"][2, 0] = -1
  assert loaded["row"][0] == 12


class _SmallNet(torch.nn.Module):

  def __init__(self):
    super().__init__()
    self.conv = torch.nn.Conv2d(3, 4, 3)
    self.bn = torch.nn.BatchNorm2d(4)
    self.fc = torch.nn.Linear(4, 2)

  def forward(self, x):
    return self.fc(self.bn(self.conv(x)).mean((2, 3)))


@pytest.fixture(scope="module")
def trained_net():
  """A conv+bn+linear net after one SGD step (moved BN statistics too)."""
  torch.manual_seed(0)
  net = _SmallNet()
  optimizer = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
  net(torch.randn(2, 3, 6, 6)).sum().backward()
  optimizer.step()
  return net, optimizer


@pytest.mark.parametrize("fmt", FORMATS)
def test_module_state_dict(tmp_path, fmt, trained_net):
  state = trained_net[0].state_dict()
  loaded = torch_io.load_state_dict(_save(state, tmp_path / "m.pth", fmt))
  assert list(loaded) == list(state)
  for name, tensor in state.items():
    _assert_same(loaded[name], tensor)
  assert loaded["bn.num_batches_tracked"].dtype == np.int64
  assert loaded["bn.num_batches_tracked"] == 1


@pytest.mark.parametrize("fmt", FORMATS)
def test_training_checkpoint_is_unwrapped(tmp_path, fmt, trained_net):
  net, optimizer = trained_net
  path = _save({"epoch": 3, "state_dict": net.state_dict(),
                "optimizer": optimizer.state_dict(),
                "args": argparse.Namespace(lr=0.1, arch="hrnet")},
               tmp_path / "c.pth", fmt)
  loaded = torch_io.load_state_dict(path)
  assert list(loaded) == list(net.state_dict())
  for name, tensor in net.state_dict().items():
    _assert_same(loaded[name], tensor)

  whole = torch_io.load_checkpoint(path)
  assert whole["epoch"] == 3
  momentum = optimizer.state_dict()["state"][0]["momentum_buffer"]
  _assert_same(whole["optimizer"]["state"][0]["momentum_buffer"], momentum)
  assert whole["optimizer"]["param_groups"][0]["lr"] == 0.1
  args = whole["args"]
  assert isinstance(args, torch_io.UnsupportedObject)
  assert (args.module, args.name) == ("argparse", "Namespace")
  assert args.state == {"lr": 0.1, "arch": "hrnet"}


def test_wrapper_key_priority(tmp_path):
  first = {"w": torch.ones(2)}
  second = {"w": torch.zeros(3)}
  path = _save({"state_dict_ema": second, "state_dict": first, "step": 1},
               tmp_path / "w.pth", "zip")
  _assert_same(torch_io.load_state_dict(path)["w"], first["w"])
  path = _save({"net": second, "epoch": 2}, tmp_path / "n.pth", "zip")
  _assert_same(torch_io.load_state_dict(path)["w"], second["w"])


@pytest.mark.parametrize("fmt", FORMATS)
def test_other_pickled_values(tmp_path, fmt):
  path = _save({"best": np.float64(0.75), "mean": np.array([1, 2, 3], np.int32),
                "none": np.zeros(0), "shape": torch.Size([2, 3]),
                "dtype": torch.float16, "tags": {"a", "b"},
                "w": torch.full((2,), 4.0)}, tmp_path / "o.pth", fmt)
  whole = torch_io.load_checkpoint(path)
  assert whole["best"] == 0.75 and whole["best"].dtype == np.float64
  np.testing.assert_array_equal(whole["mean"], np.array([1, 2, 3], np.int32))
  assert whole["mean"].dtype == np.int32 and whole["none"].shape == (0,)
  assert whole["shape"] == (2, 3) and whole["tags"] == {"a", "b"}
  assert whole["dtype"] == torch_io.TorchDtype("float16")
  assert list(torch_io.load_state_dict(path)) == ["w"]  # numpy arrays dropped.


class _RunsShell:

  def __init__(self, marker):
    self.marker = marker

  def __reduce__(self):
    return os.system, (f"touch {self.marker}",)


class _RunsEval:

  def __init__(self, marker):
    self.marker = marker

  def __reduce__(self):
    return builtins.eval, (f"open({str(self.marker)!r}, 'w').close()",)


@pytest.mark.parametrize("fmt", FORMATS)
def test_malicious_pickle_is_not_executed(tmp_path, fmt):
  shell_marker, eval_marker = tmp_path / "shell_ran", tmp_path / "eval_ran"
  weight = torch.arange(6.0).reshape(2, 3)
  path = _save({"weight": weight, "hook": _RunsShell(shell_marker),
                "hooks": [_RunsEval(eval_marker)]}, tmp_path / "evil.pth", fmt)

  loaded = torch_io.load_state_dict(path)
  whole = torch_io.load_checkpoint(path)
  assert not shell_marker.exists() and not eval_marker.exists()
  assert list(loaded) == ["weight"]
  _assert_same(loaded["weight"], weight)
  assert (whole["hook"].module, whole["hook"].name) == (os.system.__module__,
                                                        "system")
  assert whole["hook"].args == (f"touch {shell_marker}",)
  assert (whole["hooks"][0].module, whole["hooks"][0].name) == ("builtins",
                                                                "eval")
  # The payload is live: an unrestricted unpickler does run it.
  torch.load(path, weights_only=False)
  assert shell_marker.exists() and eval_marker.exists()


def _zip_with(path, records):
  with zipfile.ZipFile(path, "w") as archive:
    for name, data in records.items():
      archive.writestr(f"archive/{name}", data)
  return path


def test_build_cannot_tamper_with_whitelisted_globals(tmp_path):
  # GLOBAL torch.FloatStorage; BUILD with slot state {'dtype': 1}.
  hostile = (b"\x80\x02ctorch\nFloatStorage\nN}X\x05\x00\x00\x00dtypeK\x01s"
             b"\x86b.")
  with pytest.raises(errors.TorchFileError, match="b.pth: .*AttributeError"):
    torch_io.load_checkpoint(_zip_with(tmp_path / "b.pth",
                                       {"data.pkl": hostile}))
  path = _save({"w": torch.ones(2)}, tmp_path / "ok.pth", "zip")
  assert torch_io.load_state_dict(path)["w"].dtype == np.float32


def test_big_endian_zip(tmp_path):
  tensors = {k: v for k, v in _all_dtypes().items()
             if k in ("f32", "f16", "bf16", "i64", "c64", "bool", "scalar")}
  little = _save(tensors, tmp_path / "little.pth", "zip")
  records = {}
  with zipfile.ZipFile(little) as archive:
    for name in archive.namelist():
      records[name.split("/", 1)[1]] = archive.read(name)
  records["byteorder"] = b"big"
  # torch.save numbers storage records 0, 1, ... in order of first use.
  for index, tensor in enumerate(tensors.values()):
    if tensor.dtype == torch.bfloat16:
      tensor = tensor.view(torch.int16)  # numpy has no bfloat16 to swap.
    records[f"data/{index}"] = tensor.numpy().byteswap().tobytes()
  loaded = torch_io.load_state_dict(_zip_with(tmp_path / "big.pth", records))
  for name, tensor in tensors.items():
    _assert_same(loaded[name], tensor)


class _FakeStorage:

  def __init__(self, key, numel, view=None):
    self.key, self.numel, self.view = key, numel, view


class _FakeTensor:

  def __init__(self, storage, offset, size, stride):
    self.args = (storage, offset, size, stride, False,
                 collections.OrderedDict())

  def __reduce__(self):
    # The real global, so the file names torch._utils._rebuild_tensor_v2.
    return torch._utils._rebuild_tensor_v2, self.args


class _StoragePickler(pickle.Pickler):

  def persistent_id(self, obj):
    if not isinstance(obj, _FakeStorage):
      return None
    pid = ("storage", torch.FloatStorage, obj.key, "cpu", obj.numel)
    return pid + ((obj.view,) if obj.view is not None else ())


def _pickled(obj):
  buffer = io.BytesIO()
  _StoragePickler(buffer, protocol=2).dump(obj)
  return buffer.getvalue()


def test_legacy_storage_views(tmp_path):
  # torch < 1.0 pickled views of a root storage: (view_key, offset, numel).
  root = _FakeStorage("root", 6)
  view = _FakeStorage("root", 6, view=("v", 2, 3))
  tree = {"whole": _FakeTensor(root, 0, (2, 3), (3, 1)),
          "in_view": _FakeTensor(view, 1, (2,), (1,))}
  buffer = io.BytesIO()
  for header in (0x1950A86A20F9469CFC6C, 1001, {"little_endian": True}):
    pickle.dump(header, buffer, protocol=2)
  buffer.write(_pickled(tree))
  pickle.dump(["root"], buffer, protocol=2)
  buffer.write(struct.pack("<q", 6) + np.arange(10, 16, dtype="<f4").tobytes())
  (tmp_path / "old.pth").write_bytes(buffer.getvalue())
  loaded = torch_io.load_state_dict(tmp_path / "old.pth")
  np.testing.assert_array_equal(loaded["whole"], [[10, 11, 12], [13, 14, 15]])
  np.testing.assert_array_equal(loaded["in_view"], [13, 14])


def _truncated(path, keep):
  data = path.read_bytes()
  path.write_bytes(data[:keep if keep >= 0 else len(data) + keep])
  return path


def test_errors_name_file_and_cause(tmp_path):
  rng = np.random.default_rng(0)
  cases = {
      "random.pth": (b"\x00" + rng.bytes(999), "not a PyTorch checkpoint"),
      "text.pth": (b"epoch: 3\nlr: 0.1\n", "not a PyTorch checkpoint"),
      "plain.pkl": (pickle.dumps({"a": 1}, protocol=2), "magic number"),
  }
  for name, (data, cause) in cases.items():
    (tmp_path / name).write_bytes(data)
    with pytest.raises(errors.TorchFileError, match=cause) as error:
      torch_io.load_state_dict(tmp_path / name)
    assert str(tmp_path / name) in str(error.value)

  np.savez(tmp_path / "arrays.npz", w=np.ones(3))
  with pytest.raises(errors.TorchFileError, match="arrays.npz.*data.pkl"):
    torch_io.load_state_dict(tmp_path / "arrays.npz")

  with tarfile.open(tmp_path / "old_tar.pth", "w") as tar:
    for name in ("storages", "tensors", "pickle"):
      info = tarfile.TarInfo(name)
      info.size = 1
      tar.addfile(info, io.BytesIO(b"\x00"))
  with pytest.raises(errors.TorchFileError, match="old_tar.pth.*tar-format"):
    torch_io.load_checkpoint(tmp_path / "old_tar.pth")

  with pytest.raises(FileNotFoundError, match="missing.pth"):
    torch_io.load_state_dict(tmp_path / "missing.pth")

  no_tensors = _save({"epoch": 1, "acc": 0.5}, tmp_path / "meta.pth", "zip")
  with pytest.raises(errors.TorchFileError,
                     match=r"meta.pth: no tensors.*\['epoch', 'acc'\]"):
    torch_io.load_state_dict(no_tensors)


def test_truncated_files(tmp_path):
  state = {"a": torch.ones(100), "b": torch.arange(50)}
  zipped = _truncated(_save(state, tmp_path / "z.pth", "zip"), 700)
  with pytest.raises(errors.TorchFileError, match="z.pth: truncated or corr"):
    torch_io.load_state_dict(zipped)
  legacy = _truncated(_save(state, tmp_path / "l.pth", "legacy"), -10)
  with pytest.raises(errors.TorchFileError,
                     match="l.pth: file truncated inside storage"):
    torch_io.load_state_dict(legacy)


def test_storage_shorter_than_tensor(tmp_path):
  records = {"data.pkl": _pickled(
      {"w": _FakeTensor(_FakeStorage("0", 4), 0, (3, 2), (2, 1))}),
             "data/0": np.ones(4, "<f4").tobytes()}
  with pytest.raises(errors.TorchFileError,
                     match="short.pth: .*needs 6 elements.*holds 4"):
    torch_io.load_state_dict(_zip_with(tmp_path / "short.pth", records))
  records["data/0"] = np.ones(3, "<f4").tobytes()  # Record below its numel.
  with pytest.raises(errors.TorchFileError,
                     match="short2.pth: storage '0' holds 12 bytes.*says 16"):
    torch_io.load_state_dict(_zip_with(tmp_path / "short2.pth", records))
