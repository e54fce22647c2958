"""The restricted unpickler behind `torch_io`: whitelisted globals only.

A plain `pickle.load` runs whatever callables a file names. Here the globals a
checkpoint legitimately uses map to local stand-ins that only build data;
every other global becomes an inert `UnsupportedObject` subclass that records
its arguments (so a checkpoint with a pickled optimizer still yields its
tensors); nothing named by the file is imported or called.
"""

from __future__ import annotations

import collections
import pickle
from typing import Any, Callable, NamedTuple, Optional

import ml_dtypes
import numpy as np
from numpy._core import multiarray as _np_multiarray

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


class Corrupt(Exception):
  """Internal: what is wrong with the file, before the path is attached."""


class UnsupportedObject:
  """Inert stand-in for a pickled global outside the whitelist: a subclass
  per global (`module`, `name`) whose calls, `__setstate__`, appends and item
  assignments only record their arguments."""
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


class StorageType(NamedTuple):
  """A storage class named by the file (torch.FloatStorage, UntypedStorage)."""
  dtype: np.dtype


class Storage(NamedTuple):
  """One storage record; `root` is set for the views of old legacy files."""
  key: str
  dtype: np.dtype
  numel: int
  root: Optional["Storage"] = None
  byte_offset: int = 0


class TensorRef(NamedTuple):
  """A tensor as pickled; turned into an ndarray once storages are read."""
  storage: Storage
  offset: int
  size: tuple[int, ...]
  stride: tuple[int, ...]
  dtype: np.dtype


def is_count(value: Any) -> bool:
  return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _int_tuple(value: Any, what: str) -> tuple[int, ...]:
  if not isinstance(value, (tuple, list)) or not all(map(is_count, value)):
    raise Corrupt(f"tensor {what} {value!r} is not a tuple of ints >= 0")
  return tuple(value)


def _rebuild_tensor(storage: Any, offset: Any, size: Any, stride: Any,
                    *unused: Any, dtype: Any = None) -> TensorRef:
  del unused  # requires_grad, backward hooks, metadata: no meaning here.
  if not isinstance(storage, Storage):
    raise Corrupt(f"tensor built from {type(storage).__name__}, not a storage")
  if not is_count(offset):
    raise Corrupt(f"tensor storage offset {offset!r} is not an int >= 0")
  size, stride = _int_tuple(size, "size"), _int_tuple(stride, "stride")
  if len(size) != len(stride):
    raise Corrupt(f"tensor size {size} and stride {stride} differ in rank")
  if dtype is not None and (not isinstance(dtype, TorchDtype)
                            or dtype.name not in _TORCH_DTYPES):
    raise Corrupt(f"unsupported tensor dtype {dtype!r}")
  return TensorRef(storage, offset, size, stride, storage.dtype
                    if dtype is None else _TORCH_DTYPES[dtype.name])


def _codecs_encode(text: Any, encoding: Any = "utf-8") -> bytes:
  # Protocol-2 pickles spell bytes objects as _codecs.encode(str, 'latin1').
  if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
    raise Corrupt(f"_codecs.encode called with {encoding!r}")
  return text.encode("latin1")


_NDARRAY_TOKEN = object()


def _np_dtype(obj: Any, align: Any = False, copy: Any = True) -> np.dtype:
  del copy  # Always a fresh copy: BUILD then mutates it, never numpy's own.
  if not isinstance(obj, str) or not isinstance(align, bool):
    raise Corrupt(f"numpy.dtype called with {obj!r}")
  return np.dtype(obj, align, True)


def _np_reconstruct(subtype: Any, shape: Any, typecode: Any) -> np.ndarray:
  if subtype is not _NDARRAY_TOKEN:
    raise Corrupt("numpy _reconstruct of a type other than ndarray")
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
    ("torch.storage", "UntypedStorage"): StorageType(np.dtype("uint8")),
}
_WHITELIST.update({("torch", n): TorchDtype(n) for n in _TORCH_DTYPES})
_WHITELIST.update({(m, n): StorageType(d) for n, d in _STORAGE_DTYPES.items()
                   for m in ("torch", "torch.cuda")})
# Python 2 and numpy 1.x spell some modules differently.
_MODULE_ALIASES = {"__builtin__": "builtins", "copy_reg": "copyreg",
                   "numpy._core.multiarray": "numpy.core.multiarray"}


class RestrictedUnpickler(pickle.Unpickler):
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
      raise Corrupt(f"unexpected persistent id {pid!r}")
    return self._persistent(pid)


def storage_from_pid(pid: Any, storages: dict[str, Storage]) -> Any:
  """Resolves ('storage', type, key, location, numel[, view]) to a Storage."""
  if isinstance(pid, tuple) and pid[:1] == ("module",) and len(pid) == 4:
    return pid[1]  # Old files pickled module source; keep the placeholder.
  if not (isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] == "storage"
          and isinstance(pid[1], StorageType) and isinstance(pid[2], str)
          and is_count(pid[4])):
    raise Corrupt(f"unsupported storage reference {pid!r}")
  dtype, key, numel = pid[1].dtype, pid[2], pid[4]
  root = storages.setdefault(key, Storage(key, dtype, numel))
  if root.dtype != dtype or root.numel != numel:
    raise Corrupt(f"storage {key!r} declared with two types or sizes")
  view = pid[5] if len(pid) == 6 else None
  if view is None:
    return root
  # torch < 1.0 pickled storage views as (view_key, offset, size) of a root.
  view_key, offset, view_numel = view
  if not (is_count(offset) and is_count(view_numel)
          and offset + view_numel <= numel):
    raise Corrupt(f"storage view {view!r} lies outside storage {key!r}")
  return Storage(view_key, dtype, view_numel, root, offset * dtype.itemsize)
