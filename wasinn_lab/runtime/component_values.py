"""Faster component values: targeted overrides of wasmtime-py 50.0.1's conversions.

Applied explicitly with ``install()`` (never at import) and undone with ``uninstall()``;
process-wide, since they patch classes of ``wasmtime/component/_types.py`` and the host
callback of ``_linker.py``. ``tune_malloc()`` is a separate, also explicit, glibc setting.

1. ``list<u8>`` (always): stock ``ListType.convert_to_c``/``convert_from_c`` convert one
   ``wasmtime_component_val_t`` (32 bytes: kind u8 at offset 0, payload union at offset 8) per
   byte through Python objects, about 0.6-0.8 us a byte. Here the val array is filled through
   a small template in blocks (a bytearray extended-slice assignment plus one memmove per
   block, ~1.5 ns a byte) and read with one ctypes ``c_char`` array extended slice (~1 ns a
   byte). The C API's own element-wise conversions (guest memory <-> Rust ``Val::List`` <->
   this array, ~20 ns an element) stay: they are most of what is left.

2. Explicit ``Variant`` for untagged variant-likes (always): wasmtime-py decides per type
   whether a variant/option/result takes ``Variant(tag, payload)`` ("tagged", when two cases
   accept the same Python classes) or the bare payload ("untagged"). For
   ``result<option<T>, E>`` the option's ``none`` case accepts any object, so the ``err`` case
   can never be chosen: a host function cannot return its error. With the override a
   ``Variant`` whose tag names one of the cases is taken as that case, tagged or not.
   (Ambiguous only if that case's payload is itself a tagged variant with the same case
   names; none is in our WIT.)

3. ``cache_func_types=True``: host functions defined after ``install`` look up their type once
   instead of on every call, and type introspection is memoized on the type objects.

4. ``malloc_arrays=True``: result arrays come from libc ``malloc`` instead of
   ``vallist_new_uninit`` (which initializes every element first).

Everything else keeps the stock behaviour (other element types; values of the wrong Python
type raise the same TypeError).
"""

from __future__ import annotations

import ctypes
import importlib.metadata
import threading
import warnings
from typing import Any

from wasmtime import _ffi as ffi
from wasmtime.component import _enter, _linker, _types

__all__ = ["enable", "install", "uninstall", "installed", "tune_malloc"]

# Big blocks kept in glibc's heap below this: a 1 MiB list<u8> makes 32-40 MiB arrays.
HEAP_THRESHOLD = 64 << 20

_VAL_SIZE = ctypes.sizeof(ffi.wasmtime_component_val_t)  # 32
_PAYLOAD = ffi.wasmtime_component_val_t.of.offset  # 8
_U8_KIND = ffi.WASMTIME_COMPONENT_U8.value
_LIST_KIND = ffi.WASMTIME_COMPONENT_LIST.value

_stock: dict[str, Any] = {}
_WASMTIME_VERSION = importlib.metadata.version("wasmtime")
_MALLOC_VERIFIED_MAJOR = "50"  # `nm -D _libwasmtime.so`: U malloc, U free (System allocator)
_malloc: Any = None  # libc malloc, when install(malloc_arrays=True)

# Lowering packs through a small template: a bytearray of _BLOCK elements whose kind bytes are
# already set. For each block, the payload bytes go in with one extended-slice assignment
# (a tight C loop in bytearray) and the block is copied into wasmtime's array with one
# memmove. A memoryview strided assignment is 3-4 ns a byte; this is about 1.5 ns.
_BLOCK = 1 << 14  # elements: a 512 KiB template, warm in cache
_template = bytearray((bytes((_U8_KIND,)) + bytes(_VAL_SIZE - 1)) * _BLOCK)
_template_c = (ctypes.c_char * len(_template)).from_buffer(_template)
_template_lock = threading.Lock()  # one template, any thread may lower


def _fill(addr: int, data: Any) -> None:
    n = len(data)
    with _template_lock:
        for start in range(0, n, _BLOCK):
            m = min(_BLOCK, n - start)
            _template[_PAYLOAD : m * _VAL_SIZE : _VAL_SIZE] = data[start : start + m]
            ctypes.memmove(addr + start * _VAL_SIZE, _template_c, m * _VAL_SIZE)


def _list_to_c(self: _types.ListType, store: Any, val: Any, ptr: Any) -> None:
    if not isinstance(self.element, _types.U8):
        return _stock["list_to_c"](self, store, val, ptr)
    if isinstance(val, memoryview):
        val = val.cast("B")
    elif not isinstance(val, (bytes, bytearray)):
        raise TypeError("expected bytes value")
    n = len(val)
    raw = ffi.wasmtime_component_vallist_t()
    if n and _malloc is not None:
        addr = _malloc(n * _VAL_SIZE)
        if not addr:
            raise MemoryError(f"list<u8> of {n} bytes")
        raw.size = n
        raw.data = ctypes.cast(addr, ctypes.POINTER(ffi.wasmtime_component_val_t))
    else:
        ffi.wasmtime_component_vallist_new_uninit(raw, n)
    if n:
        _fill(ctypes.cast(raw.data, ctypes.c_void_p).value or 0, val)
    ptr.contents.kind = ffi.WASMTIME_COMPONENT_LIST
    ptr.contents.of.list = raw


def _list_from_c(self: _types.ListType, c: Any) -> Any:
    if not isinstance(self.element, _types.U8):
        return _stock["list_from_c"](self, c)
    assert c.kind == _LIST_KIND
    n = c.of.list.size
    try:
        if not n:
            return b""
        addr = ctypes.cast(c.of.list.data, ctypes.c_void_p).value
        vals = (ctypes.c_char * (n * _VAL_SIZE)).from_address(addr)
        # Every element is a u8: wasmtime lifted the list with this very type.
        assert vals[0] == vals[(n - 1) * _VAL_SIZE] == bytes((_U8_KIND,))
        # A c_char array's extended slice is a tight C loop that returns bytes (~1 ns a byte).
        return vals[_PAYLOAD::_VAL_SIZE]
    finally:
        # u8 elements own nothing: free the array as it is (stock code first resets each
        # element to a bool, which changes nothing for u8).
        ffi.wasmtime_component_vallist_delete(ctypes.byref(c.of.list))


def _lower(self: _types.VariantLikeType, store: Any, val: Any) -> Any:
    if isinstance(val, _types.Variant) and not self._tagged():
        for name, ty in self._cases():
            if name != val.tag:
                continue
            if ty is None:
                return (name, None)
            raw = ffi.wasmtime_component_val_t()
            ty.convert_to_c(store, val.payload, ctypes.pointer(raw))
            return (name, ffi.wasmtime_component_val_new(ctypes.byref(raw)))
    return _stock["lower"](self, store, val)


# --- 3. (opt-in) host function types looked up once --------------------------------------------
# Stock `_linker.func_impl` rebuilds the function's type on every call (FuncType, then a new
# ValType per parameter and for the result, through several C calls each): about half of the
# Python time of a small host call. The type of a host function is that of the import it
# satisfies, the same on every call, so it is kept per function (the slab index add_func
# registered). Caveat: one definition serving components that import it with *different*
# types (not semver-compatible versions of an interface) would need a key per type.

_func_types: dict[int, tuple[list[Any], Any]] = {}


def _func_impl(idx, context, ty_raw, args, nargs, results, nresults):  # type: ignore[no-untyped-def]
    key = idx or 0

    def run(store: Any) -> None:
        entry = _func_types.get(key)
        if entry is None:
            with _types.FuncType._from_ptr(ty_raw, owner=store) as fty:
                entry = _func_types[key] = ([ty for _, ty in fty.params], fty.result)
        param_tys, result_ty = entry
        assert len(param_tys) == nargs
        pyargs = [ty.convert_from_c(args[i]) for i, ty in enumerate(param_tys)]
        result = _linker.FUNCTIONS.get(key)(store, *pyargs)
        if result_ty is None:
            assert result is None
        else:
            result_ty.convert_to_c(store, result, results)

    return _enter.catch_exceptions(context, run)


def _func_finalize(idx):  # type: ignore[no-untyped-def]
    _func_types.pop(idx or 0, None)
    if _linker.FUNCTIONS:
        _linker.FUNCTIONS.deallocate(idx or 0)


_func_impl_c = ffi.wasmtime_component_func_callback_t(_func_impl)

# Type introspection: `ListType.element`, `VariantType.cases`, `OptionType.payload`, ... ask the
# C API and build new ValType objects on every access, and variant lowering asks many times
# (`_tagged()` walks every case's Python classes, then each case again). A type object
# describes one type for its whole life, so with the function types kept (above) each answer
# is computed once. Measured: get-parameter (-> option<variant>) and next-chunk (->
# result<option<string>, error>) spend most of their Python time here otherwise.
_MEMO_PROPERTIES = [
    (_types.ListType, "element"),
    (_types.RecordType, "fields"),
    (_types.TupleType, "elements"),
    (_types.VariantType, "cases"),
    (_types.OptionType, "payload"),
    (_types.ResultType, "ok"),
    (_types.ResultType, "err"),
    (_types.EnumType, "names"),
    (_types.FlagsType, "names"),
]
_MEMO_METHODS = [(_types.VariantLikeType, "_tagged")]


def _memo_property(prop: property, name: str) -> property:
    fget = prop.fget
    key = f"_fastvals_{name}"

    def get(self: Any) -> Any:
        d = self.__dict__
        try:
            return d[key]
        except KeyError:
            value = d[key] = fget(self)  # type: ignore[misc]
            return value

    return property(get, doc=prop.__doc__)


def _memo_method(fn: Any, name: str) -> Any:
    key = f"_fastvals_{name}"

    def call(self: Any) -> Any:
        d = self.__dict__
        try:
            return d[key]
        except KeyError:
            value = d[key] = fn(self)
            return value

    return call


_func_finalize_c = ctypes.CFUNCTYPE(None, ctypes.c_void_p)(_func_finalize)


def install(*, malloc_arrays: bool = False, cache_func_types: bool = False) -> None:
    """Apply both overrides (idempotent).

    ``malloc_arrays``: allocate the val arrays for list<u8> results with libc ``malloc``
    instead of ``wasmtime_component_vallist_new_uninit``, which initializes every element
    first (about 5 ns an element, a tenth of a 1 MiB round trip). Sound only because this
    build of libwasmtime uses Rust's System allocator, i.e. frees the array with libc
    ``free``; re-check on every wasmtime upgrade (``nm -D _libwasmtime.so`` shows
    ``U malloc``/``U free`` and no allocator of its own).

    ``cache_func_types``: host functions defined *after* this call look their type up once,
    and type introspection is memoized on the type objects (see above). Functions already
    added keep the stock callback."""
    global _malloc
    if _stock:
        return
    if malloc_arrays and _WASMTIME_VERSION.split(".")[0] != _MALLOC_VERIFIED_MAJOR:
        warnings.warn(f"fastvals: malloc_arrays verified for wasmtime {_MALLOC_VERIFIED_MAJOR}.x only, "
                      f"not {_WASMTIME_VERSION}: using vallist_new_uninit", stacklevel=2)
        malloc_arrays = False
    if malloc_arrays:
        libc = ctypes.CDLL(None)
        _malloc = libc.malloc
        _malloc.restype = ctypes.c_void_p
        _malloc.argtypes = [ctypes.c_size_t]
    _stock["list_to_c"] = _types.ListType.convert_to_c
    _stock["list_from_c"] = _types.ListType.convert_from_c
    _stock["lower"] = _types.VariantLikeType._lower
    _types.ListType.convert_to_c = _list_to_c  # type: ignore[method-assign]
    _types.ListType.convert_from_c = _list_from_c  # type: ignore[method-assign]
    _types.VariantLikeType._lower = _lower  # type: ignore[method-assign]
    if cache_func_types:
        _stock["func_impl"] = _linker.func_impl
        _stock["func_finalize"] = _linker.func_finalize
        _linker.func_impl = _func_impl_c
        _linker.func_finalize = _func_finalize_c
        for cls, name in _MEMO_PROPERTIES:
            _stock[f"{cls.__name__}.{name}"] = cls.__dict__[name]
            setattr(cls, name, _memo_property(cls.__dict__[name], name))
        for cls, name in _MEMO_METHODS:
            _stock[f"{cls.__name__}.{name}"] = cls.__dict__[name]
            setattr(cls, name, _memo_method(cls.__dict__[name], name))


def uninstall() -> None:
    global _malloc
    if not _stock:
        return
    _malloc = None
    _types.ListType.convert_to_c = _stock.pop("list_to_c")  # type: ignore[method-assign]
    _types.ListType.convert_from_c = _stock.pop("list_from_c")  # type: ignore[method-assign]
    _types.VariantLikeType._lower = _stock.pop("lower")  # type: ignore[method-assign]
    if "func_impl" in _stock:  # functions added meanwhile keep pointing at ours: fine, it stays
        _linker.func_impl = _stock.pop("func_impl")
        _linker.func_finalize = _stock.pop("func_finalize")
        for cls, name in _MEMO_PROPERTIES + _MEMO_METHODS:
            setattr(cls, name, _stock.pop(f"{cls.__name__}.{name}"))


def installed() -> bool:
    return bool(_stock)


def tune_malloc(threshold: int = 256 << 20) -> bool:
    """Keep big blocks in glibc's heap instead of fresh mmaps (process-wide, glibc only).

    A list<u8> of n bytes makes wasmtime allocate several arrays of 32*n bytes (its Val list,
    the C API's val array, ours). Above glibc's mmap threshold (32 MiB at most, dynamically)
    each is a fresh mmap and every page faults on first touch, then is unmapped on free:
    measured as half the time of a 1 MiB round trip. With the thresholds raised, freed blocks
    are reused. The cost: up to `threshold` bytes of freed heap stay with the process.
    Returns False where it does not apply (not glibc)."""
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
    return bool(mallopt(M_MMAP_THRESHOLD, threshold)) and bool(mallopt(M_TRIM_THRESHOLD, threshold))


def enable() -> None:
    """What the component runtime uses, set once for the process (idempotent): every
    override, and glibc keeping the blocks of a tensor-sized list (up to HEAP_THRESHOLD)."""
    if not installed():
        install(cache_func_types=True, malloc_arrays=True)
        tune_malloc(HEAP_THRESHOLD)
