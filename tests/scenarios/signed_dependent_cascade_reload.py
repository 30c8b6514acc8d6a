# Two findings on signed bundles (SignaturePolicy.Required, pinned key):
#
# 1. The manifest of every signed bundle loaded from disk carries a garbage `path`.
#    polyplug/manifest.py manifest_doc_from_text builds its dir view with
#    `_view(os.fsencode(...))`: the bytes object is a temporary, and `view.ptr` keeps a
#    raw pointer only (the from_buffer cdata is dropped at once), so the bytes are freed
#    before pp_manifest_doc_parse copies them -- a read of freed memory.  load_bundle
#    returns the garbage (ManifestData.path), the runtime stores it, the Lua VM uses it
#    as its directory (chunk names, package.path).
#
# 2. A signed bundle with needs_reinit_on_dep_reload = true is reloaded by the runtime
#    itself whenever its provider reloads (pp_runtime.c reload_dependents).  The cascade
#    rebuilds the manifest from the stored copy (bundle_as_manifest: memset, so
#    m->files = NULL) and the loader reads the entry file and modules from the directory:
#    no verification.  Today finding 1 hides it (the stored path is garbage, so the
#    cascade fails with "file does not exist" at a garbled path); with finding 1 fixed
#    (patched below, in this process only, the way the fix would do it: keep the bytes
#    alive) a file changed on disk after the signed load runs as soon as anybody reloads
#    the *provider*, which is itself validly signed.
# Expected: the path intact; the cascade verifies the dependent (fails, the previous
# version keeps serving) or refuses to reload a signed bundle it cannot verify.
from common import *
import os, tempfile
from polyplug import RuntimeConfig, SignaturePolicy
from polyplug.signing import generate_key, sign_bundle
from polyplug.signature import signature
import polyplug.manifest as manifest_mod

ANSWER = """
local ffi = require("ffi")
function polyplug_init()
    return { ["t.%s"] = { factory = function() return {} end, functions = {
        [0] = function(_, _, out) ffi.cast("uint32_t *", ffi.cast("uintptr_t", out))[0] = %d end } } },
        { code = 0 }
end
"""
seed, public = generate_key()
SIG = {"answer": signature("answer", 0, [], "u32")}

def write(d, name, body, extra=""):
    d.mkdir(exist_ok=True)
    (d / "manifest.toml").write_text(
        f'name = "{name}"\nid = {polyplug.bundle_id(name)}\nloader = "lua"\nfile = "main.lua"\n{extra}')
    (d / "main.lua").write_text(body)

def attempt(label):
    tmp = Path(tempfile.mkdtemp())
    prov, dep = tmp / "prov", tmp / "dep"
    write(prov, "prov", ANSWER % ("prov", 1))
    cid = polyplug.guest_contract_id("t.prov", 1)
    write(dep, "dep", ANSWER % ("dep", 10),
          f'needs_reinit_on_dep_reload = true\n\n[[dependency]]\nkind = "contract"\n'
          f'contract = "t.prov"\nmin_version = "1.0"\ncontract_id = {cid}\n')
    sign_bundle(prov, seed)
    sign_bundle(dep, seed)
    logs = []
    cfg = RuntimeConfig(signature_policy=SignaturePolicy.Required, trusted_keys=[public],
                        hot_reload_enabled=True, log=lambda *r: logs.append(r))
    rt = polyplug.RuntimeBuilder().config(cfg).loader(polyplug.LuaLoader()).build()
    rt.load_bundle(prov)
    m = rt.load_bundle(dep)
    print(label, "manifest path intact:", str(m.path) == str(dep), flush=True)
    c = rt.contract("t.dep", 1, signatures=SIG)
    print(label, "dep answers (signed code):", c.answer(), flush=True)
    # after the verified load, the dependent's entry file changes on disk (not re-signed)
    (dep / "main.lua").write_text(ANSWER % ("dep", 666))
    try:
        rt.reload_bundle(dep)
        print(label, "direct reload of dep: loaded (unexpected)")
    except polyplug.SignatureVerificationFailed:
        print(label, "direct reload of dep refused: SignatureVerificationFailed")
    rt.reload_bundle(prov)      # validly signed provider, unchanged
    answer = rt.contract("t.dep", 1, signatures=SIG).answer()
    print(label, "after the provider's reload, dep answers:", answer)
    print(label, "unsigned code ran under Required:", answer == 666, flush=True)
    for r in logs:
        if "cascade" in r[2]:
            print(label, "log:", ascii(r[2]))
    rt.close()

attempt("as is:")
# finding 1 fixed in this process only: keep the directory bytes alive during the parse
def from_text(text, bundle_dir):
    directory = os.fsencode(os.path.abspath(bundle_dir))
    tv, dv = manifest_mod._view(text), manifest_mod._view(directory)
    return manifest_mod._doc_from(manifest_mod.lib.pp_manifest_doc_parse, tv[0], dv[0], 0)
manifest_mod.manifest_doc_from_text = from_text
import polyplug.runtime as runtime_mod
if hasattr(runtime_mod, "manifest_doc_from_text"):
    runtime_mod.manifest_doc_from_text = from_text
attempt("path fixed:")
print("process survived")
