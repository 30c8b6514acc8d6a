#!/usr/bin/env bash
# Build a static, position-independent LuaJIT 2.1 (GC64) into csrc/luajit/.
#
# Output (relative to the repository root):
#   csrc/luajit/lib/libluajit.a
#   csrc/luajit/include/{lua.h,lualib.h,lauxlib.h,luaconf.h,luajit.h,lua.hpp}
#   csrc/luajit/include/internal/lj_*.h   LuaJIT's private headers, for the one file
#                                         of the loader that reads its internals
#                                         (csrc/pp_lua_jit.c)
#   csrc/luajit/COPYRIGHT      LuaJIT's licence, from the source that was built
#   csrc/luajit/BUILD_INFO     source, version, checksum, flags and the build key
#
# Source, without root and without touching anything outside this checkout and
# the user's cache directory:
#   * $LUAJIT_SRC, if set: a LuaJIT 2.1 source tree, built from a copy.
#   * otherwise the pinned source: the LuaJIT 2.1 tree inside the lupa 2.8 sdist
#     on PyPI (third-party/luajit21), downloaded once per machine and verified
#     against its sha256. The tarball and the built library are cached in
#     ${XDG_CACHE_HOME:-~/.cache}/polyplug/luajit/<sha256>/, so a second checkout
#     neither downloads nor compiles LuaJIT again.
# csrc/luajit/ is rebuilt whenever its build key (source checksum, compiler and
# flags, this recipe's revision) differs from the one in its BUILD_INFO.
#
# Offline: put the pinned tarball into the cache directory named in the error
# message (it is still verified), or set LUAJIT_SRC.
#
# Usage: scripts/build_luajit.sh [--force | --check]
#   --force   rebuild from source, ignoring every cache
#   --check   only say whether csrc/luajit/ is current (exit 0) or not (exit 1)
# Environment: LUAJIT_SRC, CC (default cc), JOBS (default nproc),
#              PYTHON (default python3; downloads the tarball), XDG_CACHE_HOME.
set -euo pipefail

# ---------------------------------------------------------------- settings ---
# LuaJIT 2.1 (v2.1 branch, release version 1774896198) as vendored by lupa 2.8.
PIN_NAME='lupa-2.8.tar.gz'
PIN_URL='https://files.pythonhosted.org/packages/c3/a6/0f869fbb07c393f15473b1eefefb7b5bec162fb7481803d040ed4dc46002/lupa-2.8.tar.gz'
PIN_SHA256='d8022641b9ec8ecf2c5ecbe9f47e5a70e0b87c4b5ae921b92cb02a638e0acd08'
PIN_SUBDIR='lupa-2.8/third-party/luajit21'
PIN_VERSION='LuaJIT 2.1.1774896198'

# Bump when the way the library is built changes, so old builds are not reused.
RECIPE=3

HEADERS=(lua.h lualib.h lauxlib.h luaconf.h luajit.h lua.hpp)

# ------------------------------------------------------------------ basics ---
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"
REPO_ROOT="$(cd "$SCRIPT_DIR/.." && pwd -P)"
OUT="$REPO_ROOT/csrc/luajit"
NOTICE="$REPO_ROOT/LICENSE.LuaJIT"

log()  { printf 'build_luajit: %s\n' "$*" >&2; }
die()  { printf 'build_luajit: error: %s\n' "$*" >&2; exit 1; }

FORCE=0; CHECK=0
for arg in "$@"; do
  case "$arg" in
    --force|-f) FORCE=1 ;;
    --check) CHECK=1 ;;
    -h|--help) sed -n '2,28p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument: $arg (try --help)" ;;
  esac
done

CC="${CC:-cc}"
JOBS="${JOBS:-$(nproc 2>/dev/null || echo 2)}"
PYTHON="${PYTHON:-python3}"
CFLAGS_LJ='-O2 -fPIC'
XCFLAGS_LJ='-DLUAJIT_ENABLE_CHECKHOOK'

command -v make >/dev/null 2>&1 || die "make is not installed (needed to build LuaJIT)"
# shellcheck disable=SC2086  # CC may hold several words
CC_ID="$($CC --version 2>/dev/null | head -n1)" ||
  die "C compiler '$CC' not found (install gcc or clang, or set CC)"
# shellcheck disable=SC2086
CC_TARGET="$($CC -dumpmachine 2>/dev/null || uname -m)"
# GCC's -O2 vectorizes only loops that need no run-time checks; the library's byte
# loops (string.upper/lower/rep/reverse, buffer copies) need an overlap check, so with
# -O2 alone they run a byte at a time.  The dynamic cost model lets GCC vectorize them
# (clang does at -O2 already and does not know the flag, so it is added only when the
# compiler takes it silently).
# shellcheck disable=SC2086
if [[ -z "$($CC -fvect-cost-model=dynamic -x c -c -o /dev/null - </dev/null 2>&1)" ]]; then
  CFLAGS_LJ="$CFLAGS_LJ -fvect-cost-model=dynamic"
fi

WORK=''; STAGE=''
cleanup() {
  if [[ -n "$WORK" && -d "$WORK" ]]; then rm -rf "$WORK"; fi
  if [[ -n "$STAGE" && -d "$STAGE" ]]; then rm -rf "$STAGE"; fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
WORK="$(mktemp -d "${TMPDIR:-/tmp}/polyplug-luajit.XXXXXX")"

sha256_of() { sha256sum "$1" | cut -d' ' -f1; }

# is_complete DIR: DIR holds a finished build (library, headers, notice, info).
is_complete() {
  [[ -f "$1/lib/libluajit.a" && -f "$1/BUILD_INFO" && -f "$1/COPYRIGHT" ]] || return 1
  local h
  for h in "${HEADERS[@]}"; do [[ -f "$1/include/$h" ]] || return 1; done
  [[ -f "$1/include/internal/lj_obj.h" ]] || return 1
}

info_field() { sed -n "s/^$2: //p" "$1/BUILD_INFO" 2>/dev/null | head -n1; }

# One line naming source, version and checksum: printed by every run.
summary() {
  log "$(info_field "$1" version) from $(info_field "$1" source), sha256 $(info_field "$1" sha256)$2"
}

# ------------------------------------------------------------------ source ---
# tree_digest DIR: a checksum over the files of a source tree (not .git).
tree_digest() {
  (cd "$1" && find . -path ./.git -prune -o -type f -print0 | LC_ALL=C sort -z |
     xargs -0 sha256sum) | sha256sum | cut -d' ' -f1
}

# prepare SRC: make a copied tree report its release version. Source tarballs of
# LuaJIT carry it in .relver (git export-subst), a submodule checkout in its git
# history; a copy of a submodule (like lupa's) has neither, only the generated
# src/luajit_relver.txt, which `make clean` deletes. Without this the version
# would read "2.1.ROLLING".
prepare() {
  local src="$1" relver=''
  if [[ -f "$src/.git" ]]; then rm -f "$src/.git"; fi  # a submodule pointer to nowhere
  if ! grep -qs '^[0-9][0-9]*$' "$src/.relver"; then
    relver="$(grep -s -o -m1 '^[0-9][0-9]*' "$src/src/luajit_relver.txt" || true)"
    if [[ -n "$relver" && ! -d "$src/.git" ]]; then
      printf '%s\n' "$relver" >"$src/.relver"
    fi
  fi
  make -s -C "$src/src" clean >/dev/null 2>&1 || true   # start from a clean tree
}

fetch_pinned() {
  # fetch_pinned DEST: the verified tarball at DEST, downloaded unless present.
  local dest="$1" sum
  if [[ -f "$dest" ]]; then
    sum="$(sha256_of "$dest")"
    [[ "$sum" == "$PIN_SHA256" ]] && return 0
    log "cached $PIN_NAME has sha256 $sum, expected $PIN_SHA256: downloading it again"
    rm -f "$dest"
  fi
  log "downloading $PIN_URL"
  local part="$dest.part.$$"
  if ! "$PYTHON" - "$PIN_URL" "$part" <<'EOF'
import shutil, sys, urllib.request
url, dest = sys.argv[1], sys.argv[2]
try:
    with urllib.request.urlopen(url, timeout=60) as resp, open(dest, "wb") as out:
        shutil.copyfileobj(resp, out)
except Exception as exc:  # one line, not a traceback
    sys.exit(f"{type(exc).__name__}: {exc}")
EOF
  then
    rm -f "$part"
    die "could not download the LuaJIT source ($PIN_URL; output above).
  Without access to files.pythonhosted.org, fetch that file elsewhere and save it as
    $dest
  (it is checked against sha256 $PIN_SHA256), or point LUAJIT_SRC at a LuaJIT 2.1
  source tree: LUAJIT_SRC=/path/to/luajit-2.1 pip install ..."
  fi
  sum="$(sha256_of "$part")"
  if [[ "$sum" != "$PIN_SHA256" ]]; then
    rm -f "$part"
    die "sha256 mismatch for $PIN_NAME: got $sum, expected $PIN_SHA256 (refusing to build)"
  fi
  mv -f "$part" "$dest"
}

# ------------------------------------------------------------------- build ---
check_gc64() {
  # Prints 1 if lj_arch.h resolves to GC64 with the given extra flags.
  local src="$1"; shift
  # shellcheck disable=SC2086  # CC and CFLAGS may hold several words
  $CC $CFLAGS_LJ "$@" -E -dM "$src/src/lj_arch.h" 2>/dev/null |
    awk '$2=="LJ_GC64"{print $3; f=1} END{if(!f) print "?"}'
}

build() {
  # build SRC DEST: compile SRC, then put library, headers and notice into DEST.
  local src="$1" dest="$2" bits gc64 xcflags="$XCFLAGS_LJ"
  # shellcheck disable=SC2086
  bits="$($CC -E -dM "$src/src/lj_arch.h" 2>/dev/null | awk '$2=="LJ_ARCH_BITS"{print $3}')"
  # shellcheck disable=SC2086
  gc64="$(check_gc64 "$src" $xcflags)"
  if [[ "$gc64" != 1 && "$bits" == 64 ]]; then
    xcflags="$xcflags -DLUAJIT_ENABLE_GC64"
    # shellcheck disable=SC2086
    gc64="$(check_gc64 "$src" $xcflags)"
    [[ "$gc64" == 1 ]] || die "could not enable GC64 mode for this LuaJIT source"
  elif [[ "$gc64" != 1 ]]; then
    log "warning: ${bits:-unknown}-bit target, GC64 not available"
  fi

  local targets=(libluajit.a)
  # Current 2.1 trees generate luajit.h (with the release version); old ones ship it.
  if [[ -f "$src/src/luajit_rolling.h" ]]; then targets+=(luajit.h); fi
  log "compiling LuaJIT (CC=$CC CFLAGS='$CFLAGS_LJ' XCFLAGS='$xcflags' -j$JOBS)"
  if ! make -C "$src/src" -j"$JOBS" "${targets[@]}" \
        BUILDMODE=static CC="$CC" CFLAGS="$CFLAGS_LJ" XCFLAGS="$xcflags" \
        >"$WORK/make.log" 2>&1; then
    tail -n 40 "$WORK/make.log" >&2
    die "LuaJIT build failed (log above)"
  fi
  local h
  for h in libluajit.a "${HEADERS[@]}"; do
    [[ -f "$src/src/$h" ]] || die "$h missing from the LuaJIT tree after the build"
  done
  # The library ends up inside a Python extension module: prove it is PIC.
  # shellcheck disable=SC2086
  if ! $CC -shared -o "$WORK/pic-check.so" \
        -Wl,--whole-archive "$src/src/libluajit.a" -Wl,--no-whole-archive \
        -lm -ldl >"$WORK/pic.log" 2>&1; then
    cat "$WORK/pic.log" >&2
    die "libluajit.a cannot be linked into a shared object (not PIC?)"
  fi

  local version
  version="$(sed -n 's/^#define LUAJIT_VERSION[[:space:]]*"\(.*\)"/\1/p' "$src/src/luajit.h" | head -n1)"
  [[ "$version" == "LuaJIT 2.1."* ]] || die "not a LuaJIT 2.1 source tree (version '${version:-?}')"
  [[ "$version" != *ROLLING* ]] ||
    log "warning: the tree has no release version (.relver or git history): $version"

  mkdir -p "$dest/lib" "$dest/include"
  cp "$src/src/libluajit.a" "$dest/lib/"
  for h in "${HEADERS[@]}"; do cp "$src/src/$h" "$dest/include/"; done
  mkdir -p "$dest/include/internal"
  cp "$src"/src/lj_*.h "$dest/include/internal/"
  cp "$src/COPYRIGHT" "$dest/COPYRIGHT"
  {
    printf 'version: %s\n' "$version"
    printf 'source: %s\n' "$SOURCE"
    printf 'sha256: %s\n' "$SOURCE_SHA256"
    printf 'gc64: %s\n' "$gc64"
    printf 'flags: CC=%s CFLAGS=%s XCFLAGS=%s BUILDMODE=static\n' "$CC" "$CFLAGS_LJ" "$xcflags"
    printf 'compiler: %s (%s)\n' "$CC_ID" "$CC_TARGET"
    printf 'key: %s\n' "$KEY"
  } >"$dest/BUILD_INFO"
}

# install_dir FROM: replace csrc/luajit/ with a copy of FROM, atomically.
install_dir() {
  mkdir -p "$REPO_ROOT/csrc"
  STAGE="$(mktemp -d "$REPO_ROOT/csrc/.luajit.stage.XXXXXX")"
  cp -R "$1/." "$STAGE/"
  chmod 0755 "$STAGE"
  rm -rf "$OUT"
  mv "$STAGE" "$OUT"
  STAGE=''
}

# -------------------------------------------------------------------- main ---
if [[ -n "${LUAJIT_SRC:-}" ]]; then
  [[ -f "$LUAJIT_SRC/src/Makefile" ]] ||
    die "LUAJIT_SRC=$LUAJIT_SRC is not a LuaJIT source tree (no src/Makefile)"
  SRC_GIVEN="$(cd "$LUAJIT_SRC" && pwd -P)"
  SOURCE="LUAJIT_SRC $SRC_GIVEN"
  SOURCE_SHA256="$(tree_digest "$SRC_GIVEN") (file tree)"
else
  SOURCE="$PIN_NAME (PyPI) $PIN_SUBDIR"
  SOURCE_SHA256="$PIN_SHA256"
fi
KEY="$(printf '%s\n' "recipe $RECIPE" "$SOURCE_SHA256" "$CC" "$CC_ID" "$CC_TARGET" \
         "$CFLAGS_LJ" "$XCFLAGS_LJ" | sha256sum | cut -c1-16)"

if [[ "$FORCE" -eq 0 ]] && is_complete "$OUT" && [[ "$(info_field "$OUT" key)" == "$KEY" ]]; then
  summary "$OUT" " (csrc/luajit is up to date)"
  exit 0
fi
if [[ "$CHECK" -eq 1 ]]; then
  if is_complete "$OUT"; then
    log "csrc/luajit is out of date: built with key $(info_field "$OUT" key), now $KEY"
  else
    log "csrc/luajit is not built"
  fi
  exit 1
fi

if [[ -n "${LUAJIT_SRC:-}" ]]; then
  log "copying LUAJIT_SRC=$SRC_GIVEN"
  mkdir "$WORK/src"
  cp -R "$SRC_GIVEN/." "$WORK/src/"
  chmod -R u+w "$WORK/src"   # the user's tree may be read-only
  prepare "$WORK/src"
  build "$WORK/src" "$WORK/out"
  install_dir "$WORK/out"
  summary "$OUT" " (built)"
  if ! cmp -s "$OUT/COPYRIGHT" "$NOTICE"; then
    log "note: this tree's COPYRIGHT differs from LICENSE.LuaJIT, which wheels ship"
  fi
  exit 0
fi

# The pinned source, through the per-machine cache.
CACHE_ROOT="${XDG_CACHE_HOME:-${HOME:-}/.cache}"
CACHE=''
if [[ -n "${XDG_CACHE_HOME:-}${HOME:-}" ]] &&
   mkdir -p "$CACHE_ROOT/polyplug/luajit/$PIN_SHA256" 2>/dev/null &&
   [[ -w "$CACHE_ROOT/polyplug/luajit/$PIN_SHA256" ]]; then
  CACHE="$(cd "$CACHE_ROOT/polyplug/luajit/$PIN_SHA256" && pwd -P)"
  # One build per machine at a time; others wait and then reuse its result.
  if command -v flock >/dev/null 2>&1; then
    exec 9>"$CACHE/.lock"
    flock 9
  fi
else
  log "warning: no writable cache directory ($CACHE_ROOT); LuaJIT is not cached"
fi

BUILT="${CACHE:+$CACHE/build-$KEY}"
if [[ "$FORCE" -eq 0 && -n "$BUILT" ]] && is_complete "$BUILT"; then
  install_dir "$BUILT"
  summary "$OUT" " (cached build, $BUILT)"
  exit 0
fi

TARBALL="${CACHE:-$WORK}/$PIN_NAME"
fetch_pinned "$TARBALL"
mkdir "$WORK/x"
tar -xzf "$TARBALL" -C "$WORK/x" "$PIN_SUBDIR" || die "cannot extract $PIN_SUBDIR from $PIN_NAME"
SRC="$WORK/x/$PIN_SUBDIR"
prepare "$SRC"
build "$SRC" "$WORK/out"
[[ "$(info_field "$WORK/out" version)" == "$PIN_VERSION" ]] ||
  die "built $(info_field "$WORK/out" version), expected $PIN_VERSION from the pinned source"
cmp -s "$WORK/out/COPYRIGHT" "$NOTICE" ||
  die "LICENSE.LuaJIT differs from the pinned source's COPYRIGHT: update it with the pin"

if [[ -n "$BUILT" ]]; then
  rm -rf "$BUILT"
  cp -R "$WORK/out" "$BUILT.tmp.$$"
  mv "$BUILT.tmp.$$" "$BUILT"
fi
install_dir "$WORK/out"
summary "$OUT" " (built${BUILT:+, cached in $BUILT})"
