"""Loaders: the LuaJIT loader's Python face."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from polyplug._ffi import check, ffi, lib, new_error

if TYPE_CHECKING:
    from polyplug.manifest import ManifestData
    from polyplug.runtime import BundleSource, Runtime

__all__ = ["LuaConfig", "LuaLoader"]


@dataclass(frozen=True)
class LuaConfig:
    """Settings of a :class:`LuaLoader` (none yet; kept for upstream parity)."""


class LuaLoader:
    """Loads Lua bundles (``loader = "lua"``), each into its own LuaJIT VM.

    Register it with ``RuntimeBuilder().loader(LuaLoader())``.  It can also load a
    bundle into a runtime directly with :meth:`load`, which skips manifest
    validation and bookkeeping the way upstream's ``BundleLoader::load`` does.
    """

    def __init__(self, config: LuaConfig = LuaConfig()) -> None:
        self.config = config
        cfg = ffi.new("pp_lua_config *")
        ptr = lib.pp_lua_loader_new(cfg)
        if ptr == ffi.NULL:
            raise MemoryError("could not create the Lua loader")
        self._loader: Any = ffi.gc(ptr, lib.pp_loader_release)

    def _c_loader(self) -> Any:
        return self._loader

    def loader_name(self) -> str:
        """``"lua"``: what a manifest's ``loader`` key must say."""
        return ffi.string(lib.pp_loader_name(self._loader)).decode()

    def supports_hot_reload(self) -> bool:
        """True: Lua bundles can be reloaded."""
        return bool(lib.pp_loader_supports_hot_reload(self._loader))

    def load(self, manifest: "ManifestData", source: "BundleSource", runtime: "Runtime") -> None:
        """Run the bundle's entry code in a new VM and register its contracts in ``runtime``.

        Raises :class:`InitFailed` (and friends) on failure; nothing stays registered.
        """
        from polyplug.runtime import _manifest_to_c

        keep: list[Any] = []
        cm = _manifest_to_c(manifest, keep)
        src = source._to_c(keep)
        err = new_error()
        lib.pp_loader_load(self._loader, runtime._ptr(), cm, src, err)
        check(err)
