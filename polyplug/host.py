"""Host contracts from Python: capabilities a program gives the bundles it loads.

A *host contract* is a named, versioned set of functions that the host implements and
guests call (the reverse of a guest contract).  Declare one with Python callables,
typed with the signature vocabulary of the call layer (:mod:`polyplug.signature`)::

    kv = HostContract("app.kv", 1)
    store: dict[str, str] = {}

    @kv.function(args=["string"], returns="string")
    def get(key):
        return store.get(key, "")

    @kv.function(args=["string", "string"])
    def put(key, value):
        store[key] = value

    provided = rt.provide_host_contract(kv)    # or RuntimeBuilder().host_contract(kv)

and a Lua guest calls it with ``pg.host_contract(host, "app.kv", 1, {...})``
(docs/guest-authoring.md).  Function ids follow declaration order unless given
(``id=``), like the manifest's signature table.

How a call works: the guest calls the contract's native function slot
(``NativeHostFn(instance, args, out, &err)``, what upstream's ``polyplugc`` callers do);
the slot is a C trampoline (``csrc/pp_hostfn.c``) that enters Python through a cffi
``extern "Python"`` callback — taking the GIL, from any thread, Python's own or not.
Arguments are read from the guest's argument block and the result written to its out
slot with exactly the layouts guest calls use.  A ``string``/``bytes`` result is copied
into memory owned by the calling thread that stays valid until that thread's next
host-function call (the guest SDK copies it at once).

A Python exception never crosses into the guest: the call answers
``HostContractCallFailed`` (102) with ``host function app.kv@1.get failed:
KeyError: 'x'`` as its message, and the record, with the traceback, goes through the
runtime's log funnel (scope ``host.app.kv``; by default to :mod:`logging`).  When the
guest lets that error end the call, the Python caller gets a :class:`GuestError` whose
``__cause__`` is the original exception.

Per-instance contracts: ``HostContract(..., factory=make)``.  Each
``HostApi.get_host_contract`` then calls ``make()`` and every function receives that
object first (``def get(session, key)``); ``destroy_instance`` drops it, calling its
``close()`` if it has one.  Withdrawing a contract (``withdraw()``, a replacement, or
``Runtime.close()``) destroys the instances guests still hold and releases the Python
objects once no call is running in the contract; guests that call it later get
``HostContractNotFound`` (100), never a freed object.
"""

from __future__ import annotations

import itertools
import struct
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Mapping, Optional, Sequence, Union

from polyplug import _errors
from polyplug._abi import AbiErrorCode, LogLevel
from polyplug._ffi import check, ffi, lib, new_error, text_view
from polyplug.call import split_contract
from polyplug.ids import host_contract_id
from polyplug.signature import VIEW_TYPES, FunctionSig, signature

if TYPE_CHECKING:
    from polyplug.runtime import Runtime

__all__ = ["HostContract", "ProvidedHostContract", "MAX_FUNCTIONS"]

#: the most functions one host contract may have (``PP_HOST_MAX_FUNCTIONS``)
MAX_FUNCTIONS: int = lib.PP_HOST_MAX_FUNCTIONS

_FAILED = int(AbiErrorCode.HostContractCallFailed)
_NOT_AVAILABLE = int(AbiErrorCode.FunctionNotAvailable)

#: a signature given as the manifest's table form, or as a FunctionSig
SignatureSpec = Union[FunctionSig, Mapping[str, Any]]


@dataclass(frozen=True)
class _Function:
    sig: FunctionSig
    fn: Callable[..., Any]
    raw: bool


class HostContract:
    """A host contract implemented by Python callables.

    ``name`` is the bare contract name or ``"name@major"``; ``major`` defaults to 1,
    ``minor``/``patch`` complete the version guests may ask for (a guest asking for
    ``1.2`` is served by ``1.2`` or ``1.5``, not by ``1.1``).  Without ``factory`` the
    contract is a singleton and its functions receive only their arguments; with
    ``factory`` every instance a guest asks for is ``factory()``, passed to the
    functions as their first argument.

    Declare functions with :meth:`function` (a decorator) or :meth:`add`.  A contract
    may be provided to several runtimes; changes made after providing it apply to later
    ``provide_host_contract`` calls only.
    """

    def __init__(self, name: str, major: Optional[int] = None, *, minor: int = 0,
                 patch: int = 0, factory: Optional[Callable[[], Any]] = None) -> None:
        name, major = split_contract(name, major)
        if not name or any(c.isspace() for c in name):
            raise _errors.InvalidArgument(f"host contract name {name!r}: give a non-empty "
                                          "name without spaces, e.g. \"app.kv\"")
        for what, value in (("major", major), ("minor", minor), ("patch", patch)):
            if isinstance(value, bool) or not isinstance(value, int) or \
                    not 0 <= value <= 0xFFFFFFFF:
                raise _errors.InvalidArgument(f"host contract {name}: {what} must be an integer "
                                              f"0..4294967295, not {value!r}")
        if factory is not None and not callable(factory):
            raise TypeError(f"host contract {name}@{major}: factory must be callable")
        self.name = name
        self.major = major
        self.version = (major, minor, patch)
        self.factory = factory
        self.contract_id = host_contract_id(name, major)
        self._functions: dict[str, _Function] = {}

    def __repr__(self) -> str:
        kind = "per-instance" if self.factory is not None else "singleton"
        return (f"<HostContract {self.name}@{self.major} {kind} "
                f"functions={sorted(self._functions)}>")

    @property
    def functions(self) -> dict[str, FunctionSig]:
        """The declared functions' signatures, by name."""
        return {name: f.sig for name, f in self._functions.items()}

    def function(self, fn: Optional[Callable[..., Any]] = None, *, args: Sequence[str] = (),
                 returns: Optional[str] = None, id: Optional[int] = None,  # noqa: A002
                 name: Optional[str] = None, raw: bool = False) -> Any:
        """Decorator declaring a host function (named after the Python function).

        ``args`` and ``returns`` use the signature vocabulary (``"u32"``, ``"f64"``,
        ``"bool"``, ``"string"``, ``"bytes"``, ...; C names such as ``"uint32_t"``
        work too).  ``id`` defaults to the next id in declaration order.  ``raw=True``
        hands the function the raw ``args`` and ``out`` pointers (cffi ``void *``)
        instead of Python values.  Usable bare (``@kv.function``) for a function
        without arguments or result.
        """
        def register(f: Callable[..., Any]) -> Callable[..., Any]:
            self.add(name or f.__name__, f, args, returns, id=id, raw=raw)
            return f

        return register(fn) if fn is not None else register

    def add(self, name: str, fn: Callable[..., Any], args: Sequence[str] = (),
            returns: Optional[str] = None, *, id: Optional[int] = None,  # noqa: A002
            raw: bool = False) -> FunctionSig:
        """Declare host function ``name`` (see :meth:`function`); returns its signature."""
        where = f"host contract {self.name}@{self.major}"
        if not callable(fn):
            raise TypeError(f"{where}: function {name!r} must be callable")
        if not name.isidentifier():
            raise _errors.InvalidArgument(f"{where}: function names must be identifiers, "
                                          f"not {name!r}")
        if name in self._functions:
            raise _errors.InvalidArgument(f"{where}: function {name!r} is declared twice")
        if isinstance(args, str):
            raise TypeError(f"{where}.{name}: args is a list of type names, e.g. "
                            f"args=[{args!r}]")
        taken = {f.sig.id: n for n, f in self._functions.items()}
        if id is None:
            id = max(taken, default=-1) + 1  # noqa: A001
        if isinstance(id, bool) or not isinstance(id, int) or not 0 <= id < MAX_FUNCTIONS:
            raise _errors.InvalidArgument(f"{where}.{name}: the id must be an integer "
                                          f"0..{MAX_FUNCTIONS - 1}, not {id!r}")
        if id in taken:
            raise _errors.InvalidArgument(f"{where}.{name}: id {id} is already taken by "
                                          f"{taken[id]!r}")
        if raw and (args or returns):
            raise _errors.InvalidArgument(f"{where}.{name}: a raw function reads and writes "
                                          "the pointers itself; give no args or returns")
        try:
            sig = signature(name, id, args, returns)
        except ValueError as exc:
            raise _errors.InvalidArgument(f"{where}.{name}: {exc}") from None
        self._functions[name] = _Function(sig, fn, raw)
        return sig

    @classmethod
    def from_functions(cls, name: str, major: Optional[int],
                       functions: Mapping[str, Callable[..., Any]], *,
                       signatures: Optional[Mapping[str, SignatureSpec]] = None,
                       factory: Optional[Callable[[], Any]] = None) -> HostContract:
        """A contract from a ``{name: callable}`` mapping; ids in mapping order unless
        ``signatures`` gives them (``FunctionSig`` or ``{"id", "args", "returns"}``)."""
        contract = cls(name, major, factory=factory)
        sigs = dict(signatures or {})
        unknown = sorted(set(sigs) - set(functions))
        if unknown:
            raise _errors.InvalidArgument(
                f"host contract {contract.name}@{contract.major}: signatures for functions "
                f"that are not given: {', '.join(unknown)}")
        explicit: dict[str, tuple[Optional[int], Sequence[str], Optional[str]]] = {}
        for fname in functions:
            spec = sigs.get(fname)
            if spec is None:
                explicit[fname] = (None, (), None)
            elif isinstance(spec, FunctionSig):
                explicit[fname] = (spec.id, spec.args, spec.returns)
            elif isinstance(spec, Mapping):
                extra = set(spec) - {"id", "args", "returns"}
                if extra:
                    raise _errors.InvalidArgument(
                        f"host contract {contract.name}@{contract.major}.{fname}: unknown "
                        f"signature keys {sorted(extra)} (known: id, args, returns)")
                explicit[fname] = (spec.get("id"), spec.get("args", ()), spec.get("returns"))
            else:
                raise TypeError(f"signature of {fname!r} must be a FunctionSig or a mapping "
                                "like {'args': ['u32'], 'returns': 'u32'}")
        # explicit ids first, so declaration order fills the gaps after them
        for fname, (fid, args, returns) in explicit.items():
            if fid is not None:
                contract.add(fname, functions[fname], args, returns, id=fid)
        for fname, (fid, args, returns) in explicit.items():
            if fid is None:
                contract.add(fname, functions[fname], args, returns)
        return contract

    def provide(self, runtime: Runtime, *, replace: bool = False) -> ProvidedHostContract:
        """``runtime.provide_host_contract(self, replace=replace)``."""
        return runtime.provide_host_contract(self, replace=replace)

    def _provide(self, runtime: Runtime, rt: Any, replace: bool) -> ProvidedHostContract:
        state = _State(self, ffi.cast("pp_runtime *", rt))
        keep: list[Any] = []
        desc = ffi.new("pp_host_contract_desc *")
        desc.name = text_view(self.name.encode("utf-8"), keep)
        desc.version.major, desc.version.minor, desc.version.patch = self.version
        count = len(state.entries)
        fns = ffi.new("pp_host_function[]", max(count, 1))
        for f in self._functions.values():
            slot = fns[f.sig.id]
            label = ffi.new("char[]", f.sig.name.encode())
            keep.append(label)
            slot.name = label
            if not f.raw:
                slot.args_size = struct.calcsize(f.sig.args_format) if f.sig.args else 0
                slot.out_size = struct.calcsize(f.sig.returns_format) if f.sig.returns else 0
        desc.function_count = count
        desc.functions = fns
        desc.call = lib.pp_py_host_call_adapter
        desc.create = lib.pp_py_host_create_guarded if self.factory is not None else ffi.NULL
        desc.destroy = lib.pp_py_host_destroy_guarded
        desc.release = lib.pp_py_host_release_guarded
        desc.user_data = ffi.cast("void *", state.token)
        out = ffi.new("const HostContractInterface **")
        err = new_error()
        _LIVE[state.token] = state  # until the C side releases it
        lib.pp_runtime_provide_host_contract(rt, desc, bool(replace), out, err)
        if err.status:
            _LIVE.pop(state.token, None)  # a failed provide releases nothing: never published
            check(err)
        return ProvidedHostContract(runtime, self, state, out[0])


class ProvidedHostContract:
    """A host contract a runtime provides (what ``Runtime.provide_host_contract`` returns).

    Use it as a context manager, or call :meth:`withdraw`, to stop providing it.
    """

    def __init__(self, runtime: Runtime, contract: HostContract, state: _State,
                 interface: Any) -> None:
        self.runtime = runtime
        self.contract = contract
        self._state = state
        self._interface = interface

    def __repr__(self) -> str:
        status = "withdrawn" if self.withdrawn else "provided"
        return f"<ProvidedHostContract {self.contract.name}@{self.contract.major} {status}>"

    @property
    def interface(self) -> Any:
        """The ``const HostContractInterface *`` guests get (valid until the runtime is
        garbage-collected; after a withdraw, calls through it answer code 100)."""
        return self._interface

    @property
    def contract_id(self) -> int:
        """``host_contract_id(name, major)``."""
        return self.contract.contract_id

    @property
    def withdrawn(self) -> bool:
        """True once it is no longer provided: withdrawn, replaced, or its runtime closed."""
        if self._state.released or self.runtime.closed:
            return True
        found = lib.pp_runtime_find_host_contract(self.runtime._ptr(), self.contract_id)
        return found != self._interface

    def withdraw(self) -> bool:
        """Stop providing the contract: lookups stop finding it at once, calls already
        running finish, then its instances are destroyed and the Python objects released.
        False when it was not provided any more.  Safe to call twice."""
        if self.runtime.closed:
            return False
        return bool(lib.pp_runtime_withdraw_host_contract(self.runtime._ptr(), self.contract_id,
                                                           self._interface))

    def __enter__(self) -> ProvidedHostContract:
        return self

    def __exit__(self, *exc: object) -> None:
        self.withdraw()


# ── the objects behind the C callbacks ───────────────────────────────────────

# Every provided contract's state, by its token (the user_data the C side passes back),
# until the C side calls release (after the last call left a withdrawn contract).
# Instances are tokens too (the instance pointer the C side passes back).  Tokens are
# plain integers never reused, so a stale one finds nothing instead of a freed object.
_LIVE: dict[int, _State] = {}
_tokens = itertools.count(1)


class _State:
    """What one provided contract's C callbacks reach through their ``user_data``."""

    def __init__(self, contract: HostContract, rt: Any) -> None:
        self.label = f"{contract.name}@{contract.major}"
        self.scope = f"host.{contract.name}"
        self.rt = rt  # a non-owning pp_runtime *: valid until release (close comes first)
        self.factory = contract.factory
        self.token = next(_tokens)
        self.instances: dict[int, Any] = {}  # instance token -> the factory's object
        self.released = False
        count = max((f.sig.id for f in contract._functions.values()), default=-1) + 1
        self.entries: list[Callable[[Any, Any, Any], int]] = [
            _missing(self, i) for i in range(count)]
        for f in contract._functions.values():
            self.entries[f.sig.id] = _make_entry(self, f, contract.factory is not None)

    def log(self, message: str) -> None:
        keep: list[Any] = []
        lib.pp_runtime_log(self.rt, int(LogLevel.Error),
                           text_view(self.scope.encode("utf-8", "replace"), keep),
                           text_view(message.encode("utf-8", "replace"), keep))


def _report(code: int, message: str, detail: str = "") -> int:
    """Fail the current host call with ``code``: the guest gets ``message``; the log gets
    it with ``detail`` (a traceback)."""
    m = message.encode("utf-8", "replace")
    d = detail.encode("utf-8", "replace")
    return int(lib.pp_host_error(code, m, len(m), d, len(d)))


def _traceback(exc: BaseException) -> str:
    """``exc``'s traceback as text (traceback is imported on the first failure only)."""
    import traceback

    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)).rstrip()


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _missing(state: _State, fn_id: int) -> Callable[[Any, Any, Any], int]:
    def entry(instance: Any, args: Any, out: Any) -> int:
        return _report(_NOT_AVAILABLE, f"host contract {state.label} declares no function with "
                       f"id {fn_id}")
    return entry


def _raised(state: _State, sig: FunctionSig, exc: BaseException) -> int:
    """The host function raised ``exc``."""
    message = _describe(exc)
    detail = _traceback(exc)
    text = f"host function {state.label}.{sig.name} failed: {message}"
    _errors.remember_host_failure(text[:160], exc)
    return _report(_FAILED, message, detail)


def _bad_args(state: _State, sig: FunctionSig, exc: BaseException) -> int:
    return _report(_FAILED, f"cannot read the arguments of {sig.describe()}: {exc}")


def _bad_result(state: _State, sig: FunctionSig, value: Any) -> int:
    shown = repr(value)
    if len(shown) > 80:
        shown = shown[:77] + "..."
    what = "str or bytes" if sig.returns in VIEW_TYPES else f"a {sig.returns}"
    return _report(_FAILED, f"{sig.describe()} returned {shown}, which is not {what}")


def _result_bytes(value: Any) -> bytes:
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    raise TypeError("not str or bytes")


def _decode(data: bytes, index: int) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"argument {index + 1} (string) is not valid UTF-8 ({exc.reason} at "
                         f"byte {exc.start}); declare it as bytes to receive raw bytes") from None


# All of the process's memory as one buffer: struct reads and writes the guest's argument
# block and result slot at their addresses (integers) through it, which costs a third of
# wrapping each pointer in a buffer of its own.  Only the addresses and sizes the
# signature says are touched, exactly what ffi.buffer(pointer, size) would give.
_MEM = ffi.buffer(ffi.cast("char *", 0), sys.maxsize)


def _pointer(address: int) -> Any:
    """A ``void *`` cdata for a raw function's argument block or result slot."""
    return ffi.cast("void *", address)


def _view(ptr: int, length: int) -> bytes:
    if length == 0:
        return b""
    if ptr == 0:
        raise ValueError("a StringView argument has a null pointer and a non-zero length")
    if length > _MAX_VIEW:
        raise ValueError(f"a StringView argument claims {length} bytes")
    return _MEM[ptr:ptr + length]


_MAX_VIEW = 1 << 40  # no real argument is a terabyte: a length past this is garbage

# The generated entry of one function; {placeholders} are filled per signature.
_ENTRY = """
def entry(instance, args, out):
    try:
{read}    except BaseException as exc:
        return bad_args(state, sig, exc)
    try:
        result = fn({call})
    except BaseException as exc:
        return raised(state, sig, exc)
{write}    return 0
"""


def _make_entry(state: _State, f: _Function, per_instance: bool) -> Callable[[Any, Any, Any], int]:
    """The Python side of one host function: read the arguments, call, write the result.

    Generated for the signature's exact shape (like the call layer's callers): one
    ``struct.unpack_from`` for the argument block, one ``pack_into`` for the result, both
    at the addresses the C adapter passes as integers.
    """
    sig = f.sig
    read = "        obj = instances[instance]\n" if per_instance else ""
    params = ["obj"] if per_instance else []
    if f.raw:
        read += "        args, out = pointer(args), pointer(out)\n"
        params += ["args", "out"]
    elif sig.args:
        names: list[str] = []
        decode = ""
        for i, t in enumerate(sig.args):
            if t in VIEW_TYPES:
                names += [f"p{i}", f"n{i}"]
                conv = f"view(p{i}, n{i})"
                decode += f"        a{i} = {conv if t == 'bytes' else f'decode({conv}, {i})'}\n"
            else:
                names.append(f"a{i}")
        read += f"        {', '.join(names)}, = unpack(MEM, args)\n" + decode
        params += [f"a{i}" for i in range(len(sig.args))]
    if not read:
        read = "        pass\n"
    write = ""
    if not f.raw and sig.returns in VIEW_TYPES:
        write = ("    try:\n        data = result_bytes(result)\n"
                 "    except TypeError:\n        return bad_result(state, sig, result)\n"
                 "    if not set_string(out, data, len(data)):\n"
                 "        return report(FAILED, 'out of memory for the result')\n")
    elif not f.raw and sig.returns is not None:
        write = ("    try:\n        pack(MEM, out, result)\n"
                 "    except (struct.error, TypeError, OverflowError):\n"
                 "        return bad_result(state, sig, result)\n")
    source = _ENTRY.format(read=read, call=", ".join(params), write=write)
    scope: dict[str, Any] = {
        "state": state, "sig": sig, "fn": f.fn, "instances": state.instances,
        "MEM": _MEM, "view": _view, "decode": _decode, "pointer": _pointer,
        "unpack": struct.Struct(sig.args_format).unpack_from if sig.args and not f.raw else None,
        "pack": struct.Struct(sig.returns_format).pack_into if sig.returns and not f.raw else None,
        "result_bytes": _result_bytes, "set_string": lib.pp_py_host_result_string,
        "bad_args": _bad_args, "bad_result": _bad_result, "raised": _raised,
        "report": _report, "FAILED": _FAILED, "struct": struct,
    }
    exec(compile(source, f"<polyplug host function {state.label}.{sig.describe()}>", "exec"),  # noqa: S102
         scope)
    entry: Callable[[Any, Any, Any], int] = scope["entry"]
    return entry


# ── the cffi callbacks (extern "Python" in polyplug/_build.py) ───────────────
# None of them lets an exception reach C: the entries catch everything they can, and
# `error=` is what cffi returns if something still escapes (after reporting it through
# sys.unraisablehook).

@ffi.def_extern(name="pp_py_host_call", error=_FAILED)
def _host_call(user: int, instance: int, fn_id: int, args: int, out: int) -> int:
    return _LIVE[user].entries[fn_id](instance, args, out)


@ffi.def_extern(name="pp_py_host_create")
def _host_create(user: Any, args: Any) -> Any:
    state = _LIVE[int(ffi.cast("uintptr_t", user))]
    try:
        obj = state.factory() if state.factory is not None else None
    except BaseException as exc:  # noqa: BLE001 - must not cross into C
        detail = _traceback(exc)
        _report(_FAILED, f"the factory raised {_describe(exc)}", detail)
        return ffi.NULL
    token = next(_tokens)
    state.instances[token] = obj
    return ffi.cast("void *", token)


def _close_instance(state: _State, obj: Any) -> None:
    close = getattr(obj, "close", None)
    if not callable(close):
        return
    try:
        close()
    except BaseException as exc:  # noqa: BLE001 - must not cross into C
        detail = _traceback(exc)
        state.log(f"host contract {state.label}: close() of an instance raised "
                  f"{_describe(exc)}\n{detail}")


_GONE = object()


@ffi.def_extern(name="pp_py_host_destroy")
def _host_destroy(user: Any, instance: Any) -> None:
    state = _LIVE[int(ffi.cast("uintptr_t", user))]
    obj = state.instances.pop(int(ffi.cast("uintptr_t", instance)), _GONE)
    if obj is not _GONE:
        _close_instance(state, obj)


@ffi.def_extern(name="pp_py_host_release")
def _host_release(user: Any) -> None:
    state = _LIVE[int(ffi.cast("uintptr_t", user))]
    state.released = True
    for obj in list(state.instances.values()):  # C destroyed them all before this
        _close_instance(state, obj)
    state.instances.clear()
    state.entries = []  # the user's functions and factory go with the contract
    state.factory = None
    _LIVE.pop(state.token, None)
