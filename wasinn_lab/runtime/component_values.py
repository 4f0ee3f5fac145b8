"""Faster component values for the host's own functions, with nothing of wasmtime-py changed.

wasmtime-py 50.0.1's conversions are slow where the host's WIT needs them fast, and one is
wrong for it. Rather than patch wasmtime-py's classes (process-wide: a user's own
wasmtime-py code in the same kernel would run on them), the host defines its functions
through ``fast_root(linker)``: a linker instance whose ``add_func`` registers its own C
callback, and that callback converts with *its own* type objects, each the stock type
object moved to a subclass here (``_adopt``). Only objects this module made are touched.

1. ``list<u8>``: stock ``ListType.convert_to_c``/``convert_from_c`` convert one
   ``wasmtime_component_val_t`` (32 bytes: kind u8 at offset 0, payload union at offset 8) per
   byte through Python objects, about 0.6-0.8 us a byte. Here the val array is filled through
   a small template in blocks (a bytearray extended-slice assignment plus one memmove per
   block, ~1.5 ns a byte) and read with one ctypes ``c_char`` array extended slice (~1 ns a
   byte). The C API's own element-wise conversions (guest memory <-> Rust ``Val::List`` <->
   this array, ~20 ns an element) stay: they are most of what is left. Result arrays come
   from libc ``malloc`` instead of ``vallist_new_uninit`` (which initializes every element
   first); see ``_MALLOC_VERIFIED_MAJOR``.

2. Explicit ``Variant`` for untagged variant-likes: wasmtime-py decides per type whether a
   variant/option/result takes ``Variant(tag, payload)`` ("tagged", when two cases accept the
   same Python classes) or the bare payload ("untagged"). For ``result<option<T>, E>`` the
   option's ``none`` case accepts any object, so the ``err`` case can never be chosen: a host
   function could not return its error. Here a ``Variant`` whose tag names one of the cases is
   taken as that case, tagged or not. (Ambiguous only if that case's payload is itself a
   tagged variant with the same case names; none is in our WIT.)

3. Types looked up once: stock ``_linker.func_impl`` rebuilds the function's type on every
   call (FuncType, then a new ValType per parameter and for the result, through several C
   calls each), about half of the Python time of a small host call, and type introspection
   (``ListType.element``, ``VariantType.cases``, ...) asks the C API and builds new type
   objects on every access; variant lowering asks many times. A host function's type is
   that of the import it satisfies, the same on every call, so it is kept per function, and
   each adopted type object computes each answer once.

Everything else keeps the stock behaviour (other element types; values of the wrong Python
type raise the same TypeError).
"""

from __future__ import annotations

import ctypes
import importlib.metadata
import itertools
import threading
import warnings
from collections.abc import Callable
from typing import Any

from wasmtime import WasmtimeError
from wasmtime import _ffi as ffi
from wasmtime.component import Linker, LinkerInstance, _enter, _types

__all__ = ["fast_root", "FastLinkerInstance"]

_VAL_SIZE = ctypes.sizeof(ffi.wasmtime_component_val_t)  # 32
_PAYLOAD = ffi.wasmtime_component_val_t.of.offset  # 8
_U8_KIND = ffi.WASMTIME_COMPONENT_U8.value
_LIST_KIND = ffi.WASMTIME_COMPONENT_LIST.value

# libc malloc for result arrays is sound only because this build of libwasmtime uses Rust's
# System allocator, i.e. frees the array with libc `free`: `nm -D _libwasmtime.so` shows
# `U malloc`/`U free` and no allocator of its own. Re-check on every wasmtime upgrade.
_MALLOC_VERIFIED_MAJOR = "50"


def _libc_malloc() -> Any:
    version = importlib.metadata.version("wasmtime")
    if version.split(".")[0] != _MALLOC_VERIFIED_MAJOR:
        warnings.warn(f"component values: libc malloc for value arrays verified for wasmtime "
                      f"{_MALLOC_VERIFIED_MAJOR}.x only, not {version}: using vallist_new_uninit", stacklevel=2)
        return None
    malloc = ctypes.CDLL(None).malloc
    malloc.restype = ctypes.c_void_p
    malloc.argtypes = [ctypes.c_size_t]
    return malloc


_malloc = _libc_malloc()

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


# --- the adopted type objects -----------------------------------------------------------------


def _adopt(ty: Any) -> Any:
    """``ty`` (a type object this module made, or None) moved to its subclass here, if it
    has one: same object, same layout, answers computed once and faster conversions."""
    fast = _FAST.get(type(ty))
    if fast is not None:
        ty.__class__ = fast
    return ty


def _once(stock: Any, *, adopt: Callable[[Any], Any]) -> property:
    """A stock property computed once per object, with what it returns adopted."""
    fget = stock.fget
    key = f"_fast_{fget.__name__}"

    def get(self: Any) -> Any:
        d = self.__dict__
        try:
            return d[key]
        except KeyError:
            value = d[key] = adopt(fget(self))
            return value

    return property(get, doc=stock.__doc__)


def _adopt_all(types: list[Any]) -> list[Any]:
    return [_adopt(ty) for ty in types]


def _adopt_named(items: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
    return [(name, _adopt(ty)) for name, ty in items]


def _same(value: Any) -> Any:
    return value


class _List(_types.ListType):
    element = _once(_types.ListType.element, adopt=_adopt)

    def convert_to_c(self, store: Any, val: Any, ptr: Any) -> None:
        if not isinstance(self.element, _types.U8):
            return super().convert_to_c(store, val, ptr)
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

    def convert_from_c(self, c: Any) -> Any:
        if not isinstance(self.element, _types.U8):
            return super().convert_from_c(c)
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


def _tagged_once(self: Any) -> bool:
    d = self.__dict__
    if "_fast_tagged" not in d:
        d["_fast_tagged"] = _types.VariantLikeType._tagged(self)
    return bool(d["_fast_tagged"])


def _lower_explicit(self: Any, store: Any, val: Any) -> Any:
    if isinstance(val, _types.Variant) and not self._tagged():
        for name, ty in self._cases():
            if name != val.tag:
                continue
            if ty is None:
                return (name, None)
            raw = ffi.wasmtime_component_val_t()
            ty.convert_to_c(store, val.payload, ctypes.pointer(raw))
            return (name, ffi.wasmtime_component_val_new(ctypes.byref(raw)))
    return _types.VariantLikeType._lower(self, store, val)


# Each a direct subclass (a mix-in would change the layout, and __class__ could not move).
class _Variant(_types.VariantType):
    cases = _once(_types.VariantType.cases, adopt=_adopt_named)
    _tagged = _tagged_once
    _lower = _lower_explicit


class _Option(_types.OptionType):
    payload = _once(_types.OptionType.payload, adopt=_adopt)
    _tagged = _tagged_once
    _lower = _lower_explicit


class _Result(_types.ResultType):
    ok = _once(_types.ResultType.ok, adopt=_adopt)
    err = _once(_types.ResultType.err, adopt=_adopt)
    _tagged = _tagged_once
    _lower = _lower_explicit


class _Record(_types.RecordType):
    fields = _once(_types.RecordType.fields, adopt=_adopt_named)


class _Tuple(_types.TupleType):
    elements = _once(_types.TupleType.elements, adopt=_adopt_all)


class _Enum(_types.EnumType):
    names = _once(_types.EnumType.names, adopt=_same)


class _Flags(_types.FlagsType):
    names = _once(_types.FlagsType.names, adopt=_same)


_FAST: dict[type, type] = {cls.__bases__[0]: cls for cls in (_List, _Variant, _Option, _Result, _Record, _Tuple,
                                                               _Enum, _Flags)}


# --- the host functions ----------------------------------------------------------------------

# Handle -> [function, (parameter types, result type) once known]. Handles count up from 1 and
# are never reused (a null handle reads back as 0); each step is one dict operation.
_functions: dict[int, list[Any]] = {}
_handles = itertools.count(1)


def _func_impl(idx, context, ty_raw, args, nargs, results, nresults):  # type: ignore[no-untyped-def]
    entry = _functions[idx or 0]

    def run(store: Any) -> None:
        if entry[1] is None:
            with _types.FuncType._from_ptr(ty_raw, owner=store) as fty:
                entry[1] = ([_adopt(ty) for _, ty in fty.params], _adopt(fty.result))
        param_types, result_type = entry[1]
        assert len(param_types) == nargs
        result = entry[0](store, *[ty.convert_from_c(args[i]) for i, ty in enumerate(param_types)])
        if result_type is None:
            assert result is None
        else:
            result_type.convert_to_c(store, result, results)

    return _enter.catch_exceptions(context, run)


def _func_finalize(idx):  # type: ignore[no-untyped-def]
    _functions.pop(idx or 0, None)


_func_impl_c = ffi.wasmtime_component_func_callback_t(_func_impl)
_func_finalize_c = ctypes.CFUNCTYPE(None, ctypes.c_void_p)(_func_finalize)


class FastLinkerInstance(LinkerInstance):
    """A linker instance whose functions convert their values here (see the module's
    docstring); the instances it adds are too."""

    def add_instance(self, name: str) -> LinkerInstance:
        child = super().add_instance(name)
        child.__class__ = FastLinkerInstance
        return child

    def add_func(self, name: str, func: Callable[..., Any]) -> None:
        self._assert_not_locked()
        encoded = name.encode()
        idx = next(_handles)
        _functions[idx] = [func, None]
        err = ffi.wasmtime_component_linker_instance_add_func(self.ptr(), ctypes.create_string_buffer(encoded),
                                                              len(encoded), _func_impl_c, idx, _func_finalize_c)
        if err:
            _functions.pop(idx, None)
            raise WasmtimeError._from_ptr(err)


def fast_root(linker: Linker) -> FastLinkerInstance:
    """``linker.root()``, its functions defined with the conversions here."""
    root = linker.root()
    root.__class__ = FastLinkerInstance
    return root  # type: ignore[return-value]
