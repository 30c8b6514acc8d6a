"""The Pythonic call layer over the raw ``vm.call`` vtable.

::

    arith = rt.contract("example.arith", 1)
    arith.add(7, 35)                      # 42, typed by the manifest's signature table
    with arith.instance() as counter:     # a per-instance guest object
        counter.add(1, 2)
    arith.call(0, args_cdata, out_cdata)  # raw: your own cffi memory, AbiError checked

Each function is a ``polyplug._fastcall.Function`` (csrc/python/fastcall.c): one C
call converts the Python arguments into an argument block on the C stack (``str``
arguments lend their UTF-8 bytes, ``bytes`` their buffer), calls through a call frame
with a stack ``CallArena`` and the GIL released, and decodes the result straight out
of the arena; nothing outlives the call, so functions are safe to share between
threads.  Everything that needs words stays here: a non-Ok ``AbiError`` becomes
:class:`GuestError`, :class:`FunctionNotAvailable` or :class:`ReentrantCall` with the
guest's message, and an argument that does not convert is named.  Every call goes
through the contract's registry handle, checked in C: a reload is picked up and an
unload raises :class:`StaleHandle` instead of touching freed memory.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Any, Iterator, Optional, Sequence, Union

from polyplug import _errors
from polyplug._abi import AbiErrorCode
from polyplug._ffi import fastcall, ffi, lib
from polyplug.ids import guest_contract_id
from polyplug.loader import timeout_ns
from polyplug.signature import TYPES, VIEW_TYPES, FunctionSig, signature

if TYPE_CHECKING:
    from polyplug.loader import CancelToken
    from polyplug.runtime import GuestContractHandle, Runtime

__all__ = ["Contract", "Instance", "make_caller", "split_contract"]


_STALE = int(AbiErrorCode.StaleHandle)
_NOT_AVAILABLE = int(AbiErrorCode.FunctionNotAvailable)


def _what(contract: Contract, sig: FunctionSig) -> str:
    """``example.arith@1 function add (id 0)``, or ``... function id 9`` for a bare id."""
    fn = f"function id {sig.id}" if sig.name == f"fn{sig.id}" else f"function {sig.name} (id {sig.id})"
    return f"{contract.name}@{contract.major} {fn}"


def _not_available(contract: Contract, sig: FunctionSig, instance: Optional[Instance]) -> str:
    """Why a call answered FunctionNotAvailable: an id past the registered functions (a
    signature table that does not match the code), or an instance that is gone."""
    try:
        count = int(lib.pp_function_count(contract._interface()))
    except _errors.PolyplugError:
        count = -1
    if 0 <= count <= sig.id:
        ids = f"ids 0..{count - 1}" if count else "none"
        return (f"{_what(contract, sig)} is not available: the bundle registered {count} "
                f"function(s) for this contract ({ids}); fix the id in its "
                f'[contracts."{contract.name}@{contract.major}".functions] table or register '
                "the function in polyplug_init")
    if instance is not None:
        return (f"{_what(contract, sig)} is not available on instance {instance.id}: the "
                "instance does not exist (any more), e.g. the bundle was reloaded")
    return f"{_what(contract, sig)} is not available"


def _message(err: Any) -> str:
    """The text of an ``AbiError``'s message (empty for none)."""
    if not err.message.len:
        return ""
    return ffi.string(err.message.ptr, err.message.len).decode("utf-8", "replace")


def _failure(code: int, msg: str, sig: FunctionSig, contract: Contract,
             instance: Optional[Instance] = None) -> _errors.PolyplugError:
    """The exception for a call that returned ``code`` with the message ``msg``."""
    if code == _STALE:
        if contract._runtime._closed:
            return _errors.RuntimeClosed("the runtime is closed")
        return _errors.StaleHandle(msg or "stale contract handle")
    if code == _NOT_AVAILABLE:
        detail = _not_available(contract, sig, instance)
        msg = f"{detail} ({msg})" if msg else detail
    elif not msg:
        msg = f"call to {_what(contract, sig)} failed with code {code}"
    exc = _errors.call_error(code, msg)
    exc.__cause__ = _errors.host_failure_cause(msg)
    return exc


def _argument_problem(type_name: str, value: Any) -> Optional[str]:
    """What is wrong with ``value`` as an argument of type ``type_name`` (None: nothing)."""
    if type_name == "string":
        if isinstance(value, (str, bytes, bytearray, memoryview)):
            return None
        return f"a string argument must be str or bytes, not {type(value).__name__}"
    if type_name == "bytes":
        if isinstance(value, (bytes, bytearray, memoryview)):
            return None
        return ("a bytes argument must be bytes, bytearray or memoryview, not "
                f"{type(value).__name__}")
    try:
        struct.pack("@" + TYPES[type_name][0], value)
    except (struct.error, OverflowError, TypeError):
        pass
    else:
        return None
    if type_name[0] in "ui":
        if not isinstance(value, int):
            return f"{value!r} is not an integer"
        bits = int(type_name[1:])
        lo, hi = (0, 2**bits - 1) if type_name[0] == "u" else (-(2**(bits - 1)), 2**(bits - 1) - 1)
        return f"{value} is out of range for {type_name} ({lo}..{hi})"
    if isinstance(value, (int, float)):
        return f"{value!r} is out of range for {type_name}"
    return f"{value!r} is not a number"


def _bad_arguments(sig: FunctionSig, exc: Optional[BaseException],
                   values: Sequence[Any]) -> Exception:
    """The error for arguments that could not be converted, naming the first bad one."""
    for i, (type_name, value) in enumerate(zip(sig.args, values)):
        problem = _argument_problem(type_name, value)
        if problem:
            where = f"{sig.describe()}: argument {i + 1} ({type_name})"
            if type_name in VIEW_TYPES:
                return TypeError(f"{where}: {problem}")
            return _errors.InvalidArgument(f"{where}: {problem}")
    return _errors.InvalidArgument(f"{sig.describe()}: {exc or 'the arguments do not convert'}")


# C type codes of polyplug._fastcall.Function: struct's, and s / y for string / bytes.
_CODES = {name: fmt for name, (fmt, _) in TYPES.items() if len(fmt) == 1}
_CODES.update(string="s", bytes="y")


def split_contract(spec: str, major: Optional[int]) -> tuple[str, int]:
    """``(name, major)`` for ``rt.contract(spec, major)`` and host contracts: ``spec`` may
    say ``name@major``; the major defaults to 1."""
    name, sep, text = spec.rpartition("@")
    if not sep:
        return spec, 1 if major is None else major
    try:
        parsed = int(text, 10)
    except ValueError:
        parsed = -1
    if not name or not text.isdigit() or not 0 <= parsed <= 0xFFFFFFFF:
        raise _errors.InvalidArgument(
            f"contract {spec!r}: the part after '@' must be the major version, an integer "
            "0..4294967295 (e.g. \"my.calc@1\")")
    if major is not None and major != parsed:
        raise _errors.InvalidArgument(
            f"contract {spec!r} names major {parsed} but major={major} was passed too; "
            "give the major once")
    return name, parsed


def _address(cdata: Any) -> int:
    return int(ffi.cast("uintptr_t", cdata))


def make_caller(contract: Contract, sig: FunctionSig, instance: Optional[Instance]) -> Any:
    """A callable for ``sig`` on ``contract`` (optionally on an instance).

    The callable is a ``polyplug._fastcall.Function``: the whole call (arguments,
    frame, arena, the call with the GIL released, the result) is one C function,
    shared safely by every thread.  Only failures come back here, to the two closures
    below, which raise with the messages this module writes.
    """
    rt_ptr = contract._runtime._ptr()
    offsets, size = sig.layout()
    index, generation = contract.handle

    def fail(code: int, message: bytes) -> None:
        raise _failure(code, message.decode("utf-8", "replace"), sig, contract, instance)

    def bad_arguments(values: tuple[Any, ...], exc: Optional[BaseException]) -> None:
        raise _bad_arguments(sig, exc, values) from None

    fn = fastcall.Function(
        _address(rt_ptr), index, generation,
        _address(instance._data) if instance is not None else 0,
        instance._cid if instance is not None else 0,
        sig.id, contract._timeout_ns, _address(contract._cancel_ptr),
        "".join(_CODES[t] for t in sig.args).encode(), offsets, size,
        _CODES[sig.returns].encode() if sig.returns else b"",
        instance if instance is not None else contract, fail, bad_arguments,
        _errors.GuestError)
    fn.__name__ = sig.name
    fn.__qualname__ = f"{contract.name}@{contract.major}.{sig.name}"
    fn.__doc__ = f"{contract.name}@{contract.major}: {sig.describe()}"
    fn.signature = sig
    return fn


class Contract:
    """A guest contract resolved from a runtime: ``rt.contract(name, major)``.

    Functions declared in the bundle's signature table are attributes; others can be
    described with :meth:`function`.  The contract follows reloads; after its bundle
    is unloaded every call raises :class:`StaleHandle`.
    """

    def __init__(self, runtime: Runtime, name: str, major: int,
                 signatures: Optional[dict[str, FunctionSig]] = None, *,
                 timeout: Optional[float] = None, cancel: Optional[CancelToken] = None,
                 _handle: Optional[GuestContractHandle] = None) -> None:
        self._runtime = runtime
        self.name = name
        self.major = major
        self.contract_id = guest_contract_id(name, major)
        self.timeout = timeout
        self.cancel_token = cancel
        self._timeout_ns = timeout_ns(timeout, "timeout") if timeout is not None else 0
        self._cancel_ptr = cancel._ptr if cancel is not None else ffi.NULL
        # `_handle`: the runtime found it already (Runtime.contract)
        self.handle: GuestContractHandle = _handle if _handle is not None else \
            runtime._find(self.contract_id, major, (name, major))
        self._signatures = dict(signatures or {})
        self._functions: dict[str, Any] = {}

    def __repr__(self) -> str:
        return f"<Contract {self.name}@{self.major} functions={sorted(self._signatures)}>"

    def _fill_frame(self, frame: Any, rt_ptr: Any, instance: Optional[Instance], fn_id: int,
                    args: Any, out: Any, arena: Any) -> None:
        """Fill a ``pp_call_frame`` for a call through this contract's handle."""
        frame.rt = rt_ptr
        frame.index, frame.generation = self.handle
        if instance is not None:
            frame.instance_data, frame.instance_contract_id = instance._data, instance._cid
        frame.fn_id = fn_id
        frame.args, frame.out, frame.arena = args, out, arena
        frame.timeout_ns, frame.cancel = self._timeout_ns, self._cancel_ptr

    def with_limits(self, timeout: Optional[float] = None,
                    cancel: Optional[CancelToken] = None) -> Contract:
        """The same contract whose calls carry a time limit (seconds) and/or a cancel token.

        A call past ``timeout`` raises :class:`CallTimeout`; a call whose token is
        cancelled raises :class:`Cancelled`.  Either way the bundle stays usable.
        """
        return Contract(self._runtime, self.name, self.major, self._signatures,
                        timeout=timeout, cancel=cancel)

    def _interface(self) -> Any:
        """The interface pointer behind the handle (raises StaleHandle once unloaded)."""
        return self._runtime.resolve_guest_contract(self.handle)

    @property
    def interface(self) -> Any:
        """The raw ``const GuestContractInterface *`` (valid until the bundle is unloaded)."""
        return self._interface()

    @property
    def functions(self) -> dict[str, FunctionSig]:
        """The declared signatures, by function name."""
        return dict(self._signatures)

    def function(self, fn: Union[int, str], args: Sequence[str] = (),
                 returns: Optional[str] = None) -> Any:
        """A callable for function ``fn`` (a declared name, or an id with explicit types).

        Types are our names (``u32``, ``f64``, ``string`` ...) or C names
        (``uint32_t``, ``double``).
        """
        if isinstance(fn, str):
            try:
                sig = self._signatures[fn]
            except KeyError:
                raise AttributeError(f"{self.name}@{self.major} declares no function {fn!r} "
                                     f"(declared: {sorted(self._signatures) or 'none'})") from None
        else:
            sig = signature(f"fn{fn}", fn, args, returns)
        return self._bind(sig, None)

    def _bind(self, sig: FunctionSig, instance: Optional[Instance]) -> Any:
        if instance is not None:
            return make_caller(self, sig, instance)
        cached = self._functions.get(sig.name)
        if cached is None or cached.signature != sig:
            cached = self._functions[sig.name] = make_caller(self, sig, None)
        return cached

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        fn = self.function(name)
        self.__dict__[name] = fn  # later lookups skip __getattr__
        return fn

    def __dir__(self) -> Iterator[str]:  # type: ignore[override]
        return iter(sorted(set(super().__dir__()) | set(self._signatures)))

    def call(self, fn_id: int, args: Any = ffi.NULL, out: Any = ffi.NULL,
             arena: Any = ffi.NULL, instance: Optional[Instance] = None) -> None:
        """Raw call with your own cffi memory; raises on a non-Ok ``AbiError``."""
        frame = ffi.new("pp_call_frame *")
        self._fill_frame(frame, self._runtime._ptr(), instance, fn_id, args, out, arena)
        code = lib.pp_call_frame_invoke(frame)
        if code:
            raise _failure(code, _message(frame.err), signature(f"fn{fn_id}", fn_id), self,
                           instance)

    def instance(self, args: Any = ffi.NULL) -> Instance:
        """A new guest instance (its own factory-built object); use it with ``with``."""
        return Instance(self, args)


class Instance:
    """A guest instance: calls on it run against its own factory-built object."""

    def __init__(self, contract: Contract, args: Any = ffi.NULL) -> None:
        self._contract = contract
        out = ffi.new("GuestContractInstance *")
        err = ffi.new("AbiError *")
        index, generation = contract.handle
        code = lib.pp_instance_create(contract._runtime._ptr(), index, generation, args, out,
                                      err)
        if code:
            sig = signature("create_instance", 0)
            exc = _failure(code, _message(err), sig, contract)
            raise type(exc)(f"{contract.name}@{contract.major}: {exc}") from None
        self._data = out.data
        self._cid = int(out.contract_id)
        self._functions: dict[str, Any] = {}

    @property
    def id(self) -> int:
        """The instance id the loader assigned (1, 2, ...)."""
        return int(ffi.cast("uintptr_t", self._data)) if self._data is not None else 0

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        if self._data is None:
            raise _errors.FunctionNotAvailable(
                f"{self._contract.name}@{self._contract.major}: this instance was closed")
        fn = self._functions.get(name)
        if fn is None:
            sig = self._contract.function(name).signature
            fn = self._functions[name] = self._contract._bind(sig, self)
        return fn

    def function(self, fn: Union[int, str], args: Sequence[str] = (),
                 returns: Optional[str] = None) -> Any:
        """Like :meth:`Contract.function`, bound to this instance."""
        if self._data is None:
            raise _errors.FunctionNotAvailable(
                f"{self._contract.name}@{self._contract.major}: this instance was closed")
        return self._contract._bind(self._contract.function(fn, args, returns).signature, self)

    def close(self) -> None:
        """Destroy the guest instance.  Safe to call twice."""
        if self._data is None:
            return
        data, self._data = self._data, None
        rt = self._contract._runtime
        if rt.closed:
            return  # the bundle is gone and its instances with it
        inst = ffi.new("GuestContractInstance *", (data, self._cid))
        index, generation = self._contract.handle
        lib.pp_instance_destroy(rt._ptr(), index, generation, inst[0])

    def __enter__(self) -> Instance:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
