"""Reads PyTorch `.pth` files without torch and without running code from them.

A `.pth` file is a pickle, and a plain `pickle.load` runs whatever callables the
file names. This reader unpickles with a whitelist instead: the handful of
globals a checkpoint legitimately uses (tensor rebuilders, storage types,
OrderedDict, numpy arrays and scalars, a few builtins) map to local stand-ins
that only build data. Every other global becomes an inert `UnsupportedObject`
class that records its arguments, so a checkpoint that also pickled an
optimizer, an `argparse.Namespace` or something hostile still yields its
tensors, and nothing named by the file is imported or called.

Three container formats exist:
  * zip (torch >= 1.6): `<archive>/data.pkl` plus one record per storage,
    `<archive>/data/<key>`, in the byte order named by `<archive>/byteorder`;
  * legacy (torch < 1.6, or `_use_new_zipfile_serialization=False`): magic
    number, protocol version and system-info pickles, the object pickle, the
    list of storage keys, then each storage as an int64 element count and its
    little-endian bytes. The official HRNet ImageNet checkpoints use it;
  * tar (torch < 0.4): refused with a clear error.

Tensors come back as numpy arrays of the same dtype (bfloat16 and float8 as
`ml_dtypes` types), copied out of their storages, so views and tensors that
share a storage become independent arrays.
"""

from __future__ import annotations

import collections
import os
import pickle
import struct
import zipfile
from typing import Any, Callable, NamedTuple, Optional

import ml_dtypes
import numpy as np
from numpy._core import multiarray as _np_multiarray

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001
# Top-level keys under which training scripts (timm, torchreid, HRNet, ...)
# nest the model's state dict, in the order they are tried.
_WRAPPER_KEYS = ("state_dict", "model", "state_dict_ema", "net", "module")

_TORCH_DTYPES = {
    name: np.dtype(getattr(ml_dtypes, name) if name.startswith(("bfloat",
                                                                 "float8"))
                   else name)
    for name in ("float64", "float32", "float16", "bfloat16", "int64",
                 "int32", "int16", "int8", "uint64", "uint32", "uint16",
                 "uint8", "bool", "complex64", "complex128", "float8_e4m3fn",
                 "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz")}
_STORAGE_DTYPES = {
    f"{prefix}Storage": _TORCH_DTYPES[name] for prefix, name in (
        ("Double", "float64"), ("Float", "float32"), ("Half", "float16"),
        ("BFloat16", "bfloat16"), ("Long", "int64"), ("Int", "int32"),
        ("Short", "int16"), ("Char", "int8"), ("Byte", "uint8"),
        ("Bool", "bool"), ("ComplexFloat", "complex64"),
        ("ComplexDouble", "complex128"))}


class TorchFileError(ValueError):
  """A file that is not a readable PyTorch checkpoint; names file and cause."""


class _Corrupt(Exception):
  """Internal: what is wrong with the file, before the path is attached."""


class UnsupportedObject:
  """Inert stand-in for a pickled global outside the whitelist.

  Each global gets its own subclass, with `module` and `name` saying what the
  file asked for. Calling it, `__setstate__`, appends and item assignments only
  record their arguments (`args`, `kwargs`, `state`, `listitems`,
  `dictitems`); nothing is imported or executed.
  """
  module = ""
  name = ""

  def __new__(cls, *args: Any, **kwargs: Any) -> "UnsupportedObject":
    obj = super().__new__(cls)
    obj.args, obj.kwargs = args, kwargs
    obj.state, obj.listitems, obj.dictitems = None, [], {}
    return obj

  def __init__(self, *args: Any, **kwargs: Any) -> None:
    del args, kwargs  # Recorded by __new__; REDUCE and NEWOBJ both land here.

  def __setstate__(self, state: Any) -> None:
    self.state = state

  def append(self, item: Any) -> None:
    self.listitems.append(item)

  def extend(self, items: Any) -> None:
    self.listitems.extend(items)

  def __setitem__(self, key: Any, value: Any) -> None:
    self.dictitems[key] = value

  def __repr__(self) -> str:
    return f"UnsupportedObject({self.module}.{self.name}, args={self.args!r})"


# Records below are NamedTuples: immutable, so a hostile BUILD opcode applied to
# one (or to a shared whitelist token) fails instead of modifying it.
class TorchDtype(NamedTuple):
  """A pickled `torch.<dtype>` (e.g. in an optimizer config), by name."""
  name: str


class _StorageType(NamedTuple):
  """A storage class named by the file (torch.FloatStorage, UntypedStorage)."""
  dtype: np.dtype


class _Storage(NamedTuple):
  """One storage record; `root` is set for the views of old legacy files."""
  key: str
  dtype: np.dtype
  numel: int
  root: Optional["_Storage"] = None
  byte_offset: int = 0


class _TensorRef(NamedTuple):
  """A tensor as pickled; turned into an ndarray once storages are read."""
  storage: _Storage
  offset: int
  size: tuple[int, ...]
  stride: tuple[int, ...]
  dtype: np.dtype


def _is_count(value: Any) -> bool:
  return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _int_tuple(value: Any, what: str) -> tuple[int, ...]:
  if not isinstance(value, (tuple, list)) or not all(map(_is_count, value)):
    raise _Corrupt(f"tensor {what} {value!r} is not a tuple of ints >= 0")
  return tuple(value)


def _rebuild_tensor(storage: Any, offset: Any, size: Any, stride: Any,
                    *unused: Any, dtype: Any = None) -> _TensorRef:
  del unused  # requires_grad, backward hooks, metadata: no meaning here.
  if not isinstance(storage, _Storage):
    raise _Corrupt(f"tensor built from {type(storage).__name__}, not a storage")
  if not _is_count(offset):
    raise _Corrupt(f"tensor storage offset {offset!r} is not an int >= 0")
  size, stride = _int_tuple(size, "size"), _int_tuple(stride, "stride")
  if len(size) != len(stride):
    raise _Corrupt(f"tensor size {size} and stride {stride} differ in rank")
  if dtype is not None and (not isinstance(dtype, TorchDtype)
                            or dtype.name not in _TORCH_DTYPES):
    raise _Corrupt(f"unsupported tensor dtype {dtype!r}")
  return _TensorRef(storage, offset, size, stride, storage.dtype
                    if dtype is None else _TORCH_DTYPES[dtype.name])


def _codecs_encode(text: Any, encoding: Any = "utf-8") -> bytes:
  # Protocol-2 pickles spell bytes objects as _codecs.encode(str, 'latin1').
  if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
    raise _Corrupt(f"_codecs.encode called with {encoding!r}")
  return text.encode("latin1")


_NDARRAY_TOKEN = object()


def _np_dtype(obj: Any, align: Any = False, copy: Any = True) -> np.dtype:
  del copy  # Always a fresh copy: BUILD then mutates it, never numpy's own.
  if not isinstance(obj, str) or not isinstance(align, bool):
    raise _Corrupt(f"numpy.dtype called with {obj!r}")
  return np.dtype(obj, align, True)


def _np_reconstruct(subtype: Any, shape: Any, typecode: Any) -> np.ndarray:
  if subtype is not _NDARRAY_TOKEN:
    raise _Corrupt("numpy _reconstruct of a type other than ndarray")
  reconstruct = _np_multiarray._reconstruct  # pylint: disable=protected-access
  return reconstruct(np.ndarray, shape, typecode)


def _sealed(fn: Callable[..., Any]) -> Any:
  """Wraps `fn` in a callable that BUILD cannot modify (no dict, no slots)."""
  return type("_Sealed", (), {"__slots__": (),
                              "__call__": lambda self, *a: fn(*a)})()


_WHITELIST = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set, ("builtins", "frozenset"): frozenset,
    ("builtins", "slice"): slice, ("builtins", "complex"): complex,
    # Protocol 2 spells b"" as bytes(); other bytes go through _codecs.encode.
    ("builtins", "bytes"): _sealed(lambda: b""),
    ("_codecs", "encode"): _sealed(_codecs_encode),
    ("numpy", "ndarray"): _NDARRAY_TOKEN,
    ("numpy", "dtype"): _sealed(_np_dtype),
    ("numpy.core.multiarray", "_reconstruct"): _sealed(_np_reconstruct),
    ("numpy.core.multiarray", "scalar"): _np_multiarray.scalar,
    ("torch._utils", "_rebuild_tensor"): _sealed(_rebuild_tensor),
    ("torch._utils", "_rebuild_tensor_v2"): _sealed(_rebuild_tensor),
    # v3 (torch >= 2.1, dtypes without a typed storage, e.g. uint16) reads an
    # UntypedStorage as the dtype that follows the backward hooks.
    ("torch._utils", "_rebuild_tensor_v3"): _sealed(
        lambda s, o, size, stride, grad, hooks, dtype, *meta: _rebuild_tensor(
            s, o, size, stride, dtype=dtype)),
    # A Parameter is its data (requires_grad, hooks and state are dropped).
    ("torch._utils", "_rebuild_parameter"): _sealed(lambda data, *_: data),
    ("torch._utils", "_rebuild_parameter_with_state"): _sealed(
        lambda data, *_: data),
    # Tensors carrying Python attributes; `func` came through find_class, so
    # calling it is as safe as any other whitelisted call.
    ("torch._tensor", "_rebuild_from_type_v2"): _sealed(
        lambda func, new_type, args, state: func(*args)),
    ("torch", "Size"): _sealed(lambda dims: _int_tuple(dims, "torch.Size")),
    ("torch.storage", "UntypedStorage"): _StorageType(np.dtype("uint8")),
}
_WHITELIST.update({("torch", n): TorchDtype(n) for n in _TORCH_DTYPES})
_WHITELIST.update({(m, n): _StorageType(d) for n, d in _STORAGE_DTYPES.items()
                   for m in ("torch", "torch.cuda")})
# Python 2 and numpy 1.x spell some modules differently.
_MODULE_ALIASES = {"__builtin__": "builtins", "copy_reg": "copyreg",
                   "numpy._core.multiarray": "numpy.core.multiarray"}


class _RestrictedUnpickler(pickle.Unpickler):
  """Unpickler that resolves globals from `_WHITELIST` only."""

  def __init__(self, file: Any,
               persistent_load: Callable[[Any], Any] | None = None) -> None:
    super().__init__(file)
    self._persistent = persistent_load
    self._placeholders: dict[tuple[str, str], type] = {}

  def find_class(self, module: str, name: str) -> Any:
    key = (_MODULE_ALIASES.get(module, module), name)
    if key in _WHITELIST:
      return _WHITELIST[key]
    if key not in self._placeholders:
      self._placeholders[key] = type(
          f"{key[0]}.{name}", (UnsupportedObject,),
          {"module": key[0], "name": name})
    return self._placeholders[key]

  def persistent_load(self, pid: Any) -> Any:
    if self._persistent is None:
      raise _Corrupt(f"unexpected persistent id {pid!r}")
    return self._persistent(pid)


def _storage_from_pid(pid: Any, storages: dict[str, _Storage]) -> Any:
  """Resolves ('storage', type, key, location, numel[, view]) to a _Storage."""
  if isinstance(pid, tuple) and pid[:1] == ("module",) and len(pid) == 4:
    return pid[1]  # Old files pickled module source; keep the placeholder.
  if not (isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] == "storage"
          and isinstance(pid[1], _StorageType) and isinstance(pid[2], str)
          and _is_count(pid[4])):
    raise _Corrupt(f"unsupported storage reference {pid!r}")
  dtype, key, numel = pid[1].dtype, pid[2], pid[4]
  root = storages.setdefault(key, _Storage(key, dtype, numel))
  if root.dtype != dtype or root.numel != numel:
    raise _Corrupt(f"storage {key!r} declared with two types or sizes")
  view = pid[5] if len(pid) == 6 else None
  if view is None:
    return root
  # torch < 1.0 pickled storage views as (view_key, offset, size) of a root.
  view_key, offset, view_numel = view
  if not (_is_count(offset) and _is_count(view_numel)
          and offset + view_numel <= numel):
    raise _Corrupt(f"storage view {view!r} lies outside storage {key!r}")
  return _Storage(view_key, dtype, view_numel, root, offset * dtype.itemsize)


def _read_zip(f: Any) -> tuple[Any, Callable[[str], bytes | None], bool]:
  """Unpickles a zip checkpoint; returns (tree, storage reader, big-endian)."""
  try:
    archive = zipfile.ZipFile(f)
  except zipfile.BadZipFile as exc:
    raise _Corrupt(f"truncated or corrupt zip archive ({exc})") from exc
  names = set(archive.namelist())
  pickles = [n for n in names if n.count("/") == 1 and n.endswith("/data.pkl")]
  if len(pickles) != 1:
    raise _Corrupt("zip archive without a single <archive>/data.pkl, so not a "
                   f"PyTorch checkpoint (entries: {sorted(names)[:5]})")
  prefix = pickles[0][:-len("data.pkl")]
  order = (archive.read(prefix + "byteorder")
           if prefix + "byteorder" in names else b"little")
  if order not in (b"little", b"big"):
    raise _Corrupt(f"unknown byte order {order!r}")
  storages: dict[str, _Storage] = {}
  with archive.open(pickles[0]) as stream:
    tree = _RestrictedUnpickler(
        stream, lambda pid: _storage_from_pid(pid, storages)).load()

  def read(key: str) -> bytes | None:
    record = f"{prefix}data/{key}"
    return archive.read(record) if record in names else None
  return tree, read, order == b"big"


def _read_legacy(f: Any) -> tuple[Any, Callable[[str], bytes | None], bool]:
  """Unpickles a legacy checkpoint and reads all its storages."""
  try:
    magic = _RestrictedUnpickler(f).load()
  except Exception as exc:
    raise _Corrupt("not a PyTorch checkpoint (neither a zip archive nor a "
                   f"pickle: {type(exc).__name__}: {exc})") from exc
  if magic != _LEGACY_MAGIC:
    raise _Corrupt("not a PyTorch checkpoint (a pickle without the legacy "
                   "magic number)")
  protocol = _RestrictedUnpickler(f).load()
  if protocol != _LEGACY_PROTOCOL:
    raise _Corrupt(f"unsupported legacy protocol version {protocol!r}")
  _RestrictedUnpickler(f).load()  # sys_info: storages are always little-endian.
  storages: dict[str, _Storage] = {}
  tree = _RestrictedUnpickler(
      f, lambda pid: _storage_from_pid(pid, storages)).load()
  keys = _RestrictedUnpickler(f).load()
  if not isinstance(keys, list) or not all(k in storages for k in keys):
    raise _Corrupt(f"storage key list {keys!r:.100} names unknown storages")
  raw: dict[str, bytes] = {}
  for key in keys:
    header, need = f.read(8), storages[key].numel * storages[key].dtype.itemsize
    if len(header) < 8:
      raise _Corrupt(f"file truncated before storage {key!r}")
    if struct.unpack("<q", header)[0] != storages[key].numel:
      raise _Corrupt(f"storage {key!r} holds {struct.unpack('<q', header)[0]} "
                     f"elements, its tensors declare {storages[key].numel}")
    raw[key] = f.read(need)
    if len(raw[key]) < need:
      raise _Corrupt(f"file truncated inside storage {key!r}: "
                     f"{len(raw[key])} of {need} bytes")
  return tree, raw.get, False


def _to_array(ref: _TensorRef, data: bytes | None, swap: bool) -> np.ndarray:
  """Copies the elements a tensor addresses out of its (root) storage bytes."""
  storage, dtype = ref.storage, ref.dtype
  root = storage if storage.root is None else storage.root
  if data is None:
    raise _Corrupt(f"storage {root.key!r} has no data in the file")
  if len(data) < root.numel * root.dtype.itemsize:
    raise _Corrupt(f"storage {root.key!r} holds {len(data)} bytes, its "
                   f"header says {root.numel * root.dtype.itemsize}")
  if 0 in ref.size:
    return np.empty(ref.size, dtype)
  start = storage.byte_offset
  data = memoryview(data)[start:start + storage.numel * storage.dtype.itemsize]
  extent = ref.offset + 1 + sum(
      (n - 1) * s for n, s in zip(ref.size, ref.stride))
  available = len(data) // dtype.itemsize
  if extent > available:
    raise _Corrupt(f"tensor of size {ref.size}, stride {ref.stride}, offset "
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


def _materialize(tree: Any, convert: Callable[[_TensorRef], np.ndarray]
                 ) -> Any:
  """Replaces every _TensorRef in the tree by its array, in place if mutable."""
  memo: dict[int, Any] = {}

  def walk(obj: Any) -> Any:
    if id(obj) in memo:
      return memo[id(obj)]
    if isinstance(obj, _TensorRef):
      memo[id(obj)] = convert(obj)
    elif isinstance(obj, _Storage):  # A storage pickled on its own.
      memo[id(obj)] = convert(_TensorRef(obj, 0, (obj.numel,), (1,), obj.dtype))
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
        raise _Corrupt("a tar-format PyTorch checkpoint (torch < 0.4); this "
                       "format is not supported, re-save it with torch.save")
      tree, read, swap = (_read_zip if is_zip else _read_legacy)(f)
      tensor_ids, storage_bytes = set(), {}

      def convert(ref: _TensorRef) -> np.ndarray:
        root = ref.storage if ref.storage.root is None else ref.storage.root
        if root.key not in storage_bytes:
          storage_bytes[root.key] = read(root.key)
        array = _to_array(ref, storage_bytes[root.key], swap)
        tensor_ids.add(id(array))
        return array
      return _materialize(tree, convert), tensor_ids
    except _Corrupt as exc:
      raise TorchFileError(f"{path}: {exc}") from exc
    except Exception as exc:  # Anything else while parsing untrusted bytes.
      raise TorchFileError(f"{path}: corrupt or truncated PyTorch checkpoint "
                           f"({type(exc).__name__}: {exc})") from exc


def load_checkpoint(path: str | os.PathLike) -> Any:
  """Reads a whole `.pth` file without torch and without executing its code.

  Args:
    path: a file written by `torch.save`, in the zip or the legacy format.

  Returns:
    The unpickled object tree: dicts, OrderedDicts, lists, tuples, numbers,
    strings, numpy arrays (for tensors, numpy arrays and storages),
    `TorchDtype`s, and `UnsupportedObject`s for any other pickled global.

  Raises:
    FileNotFoundError: `path` does not exist.
    TorchFileError: the file is not a readable PyTorch checkpoint; the message
      names the file and what is wrong with it.
  """
  return _load(path)[0]


def load_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """Reads the tensors of a state dict saved with `torch.save`.

  When the top level holds no tensors itself, the first of the wrapper keys
  'state_dict', 'model', 'state_dict_ema', 'net', 'module' whose value is a
  dict with tensors is unwrapped (training checkpoints such as
  `{'epoch': 3, 'state_dict': ..., 'optimizer': ...}`). Keys are returned as
  saved: a DataParallel 'module.' prefix is NOT stripped here.

  Args:
    path: a `.pth` file in the zip or the legacy format.

  Returns:
    A flat dict from parameter name to numpy array (same dtype as the tensor;
    bfloat16 as `ml_dtypes.bfloat16`), in file order. Entries that are not
    tensors (numbers, `_metadata`, numpy arrays) are dropped.

  Raises:
    FileNotFoundError: `path` does not exist.
    TorchFileError: the file is unreadable, or holds no tensors (the message
      lists the top-level keys found).
  """
  tree, tensor_ids = _load(path)

  def tensors_of(mapping: Any) -> dict[str, np.ndarray]:
    if not isinstance(mapping, dict):
      return {}
    return {k: v for k, v in mapping.items()
            if isinstance(k, str) and id(v) in tensor_ids}

  found = tensors_of(tree)
  for key in _WRAPPER_KEYS if not found and isinstance(tree, dict) else ():
    found = tensors_of(tree.get(key))
    if found:
      break
  if not found:
    what = (f"top-level keys {list(tree)[:20]}" if isinstance(tree, dict)
            else f"top-level object {tree!r:.200}")
    raise TorchFileError(f"{os.fspath(path)}: no tensors found (looked at the "
                         f"top level and under {list(_WRAPPER_KEYS)}); "
                         f"{what}")
  return found
