"""Reads PyTorch `.pth` files without torch and without running code from
them (the unpickler is `torch_pickle`'s).

Formats: zip (torch >= 1.6: `<archive>/data.pkl`, one record per storage
`<archive>/data/<key>`, byte order in `<archive>/byteorder`); legacy (torch <
1.6, the official HRNet ImageNet checkpoints: magic, protocol and sys-info
pickles, the object pickle, the storage keys, then each storage as an int64
count and its little-endian bytes); tar (torch < 0.4) is refused. Tensors
come back as independent numpy arrays of their dtype (bfloat16 and float8 as
`ml_dtypes` types).
"""

from __future__ import annotations

import os
import struct
import zipfile
from typing import Any, Callable

import numpy as np

from pshrnet_jax.convert.torch_pickle import Corrupt
from pshrnet_jax.convert.torch_pickle import RestrictedUnpickler
from pshrnet_jax.convert.torch_pickle import Storage
from pshrnet_jax.convert.torch_pickle import TensorRef
from pshrnet_jax.convert.torch_pickle import storage_from_pid
# What load_checkpoint returns besides arrays, importable from here.
from pshrnet_jax.convert.torch_pickle import TorchDtype
from pshrnet_jax.convert.torch_pickle import UnsupportedObject
from pshrnet_jax.errors import TorchFileError

__all__ = ["TorchDtype", "UnsupportedObject", "load_checkpoint",
           "load_state_dict"]

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001
# Top-level keys under which training scripts (timm, torchreid, HRNet, ...)
# nest the model's state dict, in the order they are tried.
WRAPPER_KEYS = ("state_dict", "model", "state_dict_ema", "net", "module")

def _read_zip(f: Any) -> tuple[Any, Callable[[str], bytes | None], bool]:
  """Unpickles a zip checkpoint; returns (tree, storage reader, big-endian)."""
  try:
    archive = zipfile.ZipFile(f)
  except zipfile.BadZipFile as exc:
    raise Corrupt(f"truncated or corrupt zip archive ({exc})") from exc
  names = set(archive.namelist())
  pickles = [n for n in names if n.count("/") == 1 and n.endswith("/data.pkl")]
  if len(pickles) != 1:
    raise Corrupt("zip archive without a single <archive>/data.pkl, so not a "
                   f"PyTorch checkpoint (entries: {sorted(names)[:5]})")
  prefix = pickles[0][:-len("data.pkl")]
  order = (archive.read(prefix + "byteorder")
           if prefix + "byteorder" in names else b"little")
  if order not in (b"little", b"big"):
    raise Corrupt(f"unknown byte order {order!r}")
  storages: dict[str, Storage] = {}
  with archive.open(pickles[0]) as stream:
    tree = RestrictedUnpickler(
        stream, lambda pid: storage_from_pid(pid, storages)).load()

  def read(key: str) -> bytes | None:
    record = f"{prefix}data/{key}"
    return archive.read(record) if record in names else None
  return tree, read, order == b"big"


def _read_legacy(f: Any) -> tuple[Any, Callable[[str], bytes | None], bool]:
  """Unpickles a legacy checkpoint and reads all its storages."""
  try:
    magic = RestrictedUnpickler(f).load()
  except Exception as exc:
    raise Corrupt("not a PyTorch checkpoint (neither a zip archive nor a "
                   f"pickle: {type(exc).__name__}: {exc})") from exc
  if magic != _LEGACY_MAGIC:
    raise Corrupt("not a PyTorch checkpoint (a pickle without the legacy "
                   "magic number)")
  protocol = RestrictedUnpickler(f).load()
  if protocol != _LEGACY_PROTOCOL:
    raise Corrupt(f"unsupported legacy protocol version {protocol!r}")
  RestrictedUnpickler(f).load()  # sys_info: storages are always little-endian.
  storages: dict[str, Storage] = {}
  tree = RestrictedUnpickler(
      f, lambda pid: storage_from_pid(pid, storages)).load()
  keys = RestrictedUnpickler(f).load()
  if not isinstance(keys, list) or not all(k in storages for k in keys):
    raise Corrupt(f"storage key list {keys!r:.100} names unknown storages")
  raw: dict[str, bytes] = {}
  for key in keys:
    header, need = f.read(8), storages[key].numel * storages[key].dtype.itemsize
    if len(header) < 8:
      raise Corrupt(f"file truncated before storage {key!r}")
    if struct.unpack("<q", header)[0] != storages[key].numel:
      raise Corrupt(f"storage {key!r} holds {struct.unpack('<q', header)[0]} "
                     f"elements, its tensors declare {storages[key].numel}")
    raw[key] = f.read(need)
    if len(raw[key]) < need:
      raise Corrupt(f"file truncated inside storage {key!r}: "
                     f"{len(raw[key])} of {need} bytes")
  return tree, raw.get, False


def _to_array(ref: TensorRef, data: bytes | None, swap: bool) -> np.ndarray:
  """Copies the elements a tensor addresses out of its (root) storage bytes."""
  storage, dtype = ref.storage, ref.dtype
  root = storage if storage.root is None else storage.root
  if data is None:
    raise Corrupt(f"storage {root.key!r} has no data in the file")
  if len(data) < root.numel * root.dtype.itemsize:
    raise Corrupt(f"storage {root.key!r} holds {len(data)} bytes, its "
                   f"header says {root.numel * root.dtype.itemsize}")
  if 0 in ref.size:
    return np.empty(ref.size, dtype)
  start = storage.byte_offset
  data = memoryview(data)[start:start + storage.numel * storage.dtype.itemsize]
  extent = ref.offset + 1 + sum(
      (n - 1) * s for n, s in zip(ref.size, ref.stride))
  available = len(data) // dtype.itemsize
  if extent > available:
    raise Corrupt(f"tensor of size {ref.size}, stride {ref.stride}, offset "
                   f"{ref.offset} needs {extent} elements but storage "
                   f"{root.key!r} holds {available}")
  flat = np.frombuffer(data, dtype, count=available)[ref.offset:extent]
  array = np.lib.stride_tricks.as_strided(
      flat, ref.size, tuple(s * dtype.itemsize for s in ref.stride)).copy()
  # Complex numbers swap each of their two parts, as torch does.
  unit = dtype.itemsize // (2 if dtype.kind == "c" else 1)
  if swap and unit > 1:
    array.reshape(-1).view(f"u{unit}").byteswap(inplace=True)
  return array


def _materialize(tree: Any, convert: Callable[[TensorRef], np.ndarray]
                 ) -> Any:
  """Replaces every TensorRef in the tree by its array, in place if mutable."""
  memo: dict[int, Any] = {}

  def walk(obj: Any) -> Any:
    if id(obj) in memo:
      return memo[id(obj)]
    if isinstance(obj, TensorRef):
      memo[id(obj)] = convert(obj)
    elif isinstance(obj, Storage):  # A storage pickled on its own.
      memo[id(obj)] = convert(TensorRef(obj, 0, (obj.numel,), (1,), obj.dtype))
    elif isinstance(obj, dict):
      memo[id(obj)] = obj
      for key, value in obj.items():
        obj[key] = walk(value)
    elif isinstance(obj, list):
      memo[id(obj)] = obj
      obj[:] = [walk(v) for v in obj]
    elif isinstance(obj, tuple):
      memo[id(obj)] = obj  # Cycles through a tuple keep the original.
      items = tuple(walk(v) for v in obj)
      changed = any(a is not b for a, b in zip(items, obj))
      memo[id(obj)] = items if changed else obj
    elif isinstance(obj, UnsupportedObject):
      memo[id(obj)] = obj
      obj.args, obj.state = walk(obj.args), walk(obj.state)
      obj.kwargs, obj.dictitems = walk(obj.kwargs), walk(obj.dictitems)
      obj.listitems = walk(obj.listitems)
    else:
      memo[id(obj)] = obj
    return memo[id(obj)]
  return walk(tree)


def _load(path: str | os.PathLike) -> tuple[Any, set[int]]:
  """Loads `path`; returns the tree and the ids of arrays that were tensors."""
  path = os.fspath(path)
  if not os.path.exists(path):
    raise FileNotFoundError(f"PyTorch checkpoint not found: {path}")
  with open(path, "rb") as f:
    try:
      head = f.read(512)
      f.seek(0)
      is_zip = head[:4] in (b"PK\x03\x04", b"PK\x05\x06")
      if not is_zip and head[257:262] == b"ustar":
        raise Corrupt("a tar-format PyTorch checkpoint (torch < 0.4); this "
                       "format is not supported, re-save it with torch.save")
      tree, read, swap = (_read_zip if is_zip else _read_legacy)(f)
      tensor_ids, storage_bytes = set(), {}

      def convert(ref: TensorRef) -> np.ndarray:
        root = ref.storage if ref.storage.root is None else ref.storage.root
        if root.key not in storage_bytes:
          storage_bytes[root.key] = read(root.key)
        array = _to_array(ref, storage_bytes[root.key], swap)
        tensor_ids.add(id(array))
        return array
      return _materialize(tree, convert), tensor_ids
    except Corrupt as exc:
      raise TorchFileError(f"{path}: {exc}") from exc
    except Exception as exc:  # Anything else while parsing untrusted bytes.
      raise TorchFileError(f"{path}: corrupt or truncated PyTorch checkpoint "
                           f"({type(exc).__name__}: {exc})") from exc


def load_checkpoint(path: str | os.PathLike) -> Any:
  """The whole object tree of a `.pth` file: containers, numbers, strings,
  numpy arrays (tensors, arrays, storages), `TorchDtype`s, and
  `UnsupportedObject`s for any other pickled global.

  Raises:
    FileNotFoundError: `path` does not exist.
    TorchFileError: not a readable PyTorch checkpoint (names file and fault).
  """
  return _load(path)[0]


def load_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """{name: numpy array} of the tensors of a state dict saved with
  `torch.save`, in file order; other entries are dropped, keys kept as saved
  ('module.' included). When the top level holds no tensors, the first of
  WRAPPER_KEYS holding some is unwrapped (training checkpoints).

  Raises:
    FileNotFoundError: `path` does not exist.
    TorchFileError: unreadable, or no tensors (lists the top-level keys).
  """
  tree, tensor_ids = _load(path)

  def tensors_of(mapping: Any) -> dict[str, np.ndarray]:
    if not isinstance(mapping, dict):
      return {}
    return {k: v for k, v in mapping.items()
            if isinstance(k, str) and id(v) in tensor_ids}

  found = tensors_of(tree)
  for key in WRAPPER_KEYS if not found and isinstance(tree, dict) else ():
    found = tensors_of(tree.get(key))
    if found:
      break
  if not found:
    what = (f"top-level keys {list(tree)[:20]}" if isinstance(tree, dict)
            else f"top-level object {tree!r:.200}")
    raise TorchFileError(f"{os.fspath(path)}: no tensors found (looked at the "
                         f"top level and under {list(WRAPPER_KEYS)}); "
                         f"{what}")
  return found
