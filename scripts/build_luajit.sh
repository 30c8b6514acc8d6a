#!/usr/bin/env bash
# Build a static, position-independent LuaJIT 2.1 (GC64) into csrc/luajit/.
#
# Output (relative to the repository root):
#   csrc/luajit/lib/libluajit.a
#   csrc/luajit/include/{lua.h,lualib.h,lauxlib.h,luaconf.h,luajit.h,lua.hpp}
#   csrc/luajit/BUILD_INFO
#
# Source routes, first that works wins:
#   1. $LUAJIT_SRC: a LuaJIT source tree (with src/Makefile); built from a copy.
#   2. An existing complete csrc/luajit/: nothing to do (unless --force).
#   3. Debian's luajit source package (pinned version), fetched with
#      `apt-get source --download-only`: the sha256-checked orig tarball plus the
#      CVE fixes listed in the (sha256-checked) debian tarball's patches/series,
#      applied in series order. Needs `patch` (installed with apt-get if root).
#   4. A pinned commit of the upstream git repository (branch v2.1).
#
# Usage: scripts/build_luajit.sh [--force]
# Environment: LUAJIT_SRC, CC (default cc), JOBS (default nproc).
set -euo pipefail

# ---------------------------------------------------------------- settings ---
DEB_VERSION='2.1.0~beta3+git20220320+dfsg-4.1+deb12u1'
DEB_ORIG='luajit_2.1.0~beta3+git20220320+dfsg.orig.tar.gz'
DEB_ORIG_SHA256='b4d18d2c5e663682bc7f473797e3ceaca8193e112824a5bdfa3e468d98618678'
DEB_DEBIAN="luajit_${DEB_VERSION}.debian.tar.xz"
DEB_DEBIAN_SHA256='59c6b0aae91f9debe37045812d6fb99b39f41deb7d1b254467ed3d3d417352dd'
# Patches from debian/patches/series that are applied: those naming a CVE.
DEB_PATCH_RE='CVE-[0-9]{4}-[0-9]{4,}'
DEB_SUITE='bookworm'
DEB_SRC_FILE='/etc/apt/sources.list.d/polyplug-deb-src.sources'

GIT_URL='https://github.com/LuaJIT/LuaJIT'
GIT_BRANCH='v2.1'
GIT_COMMIT='871db2c84ecefd70a850e03a6c340214a81739f0'

HEADERS=(lua.h lualib.h lauxlib.h luaconf.h luajit.h lua.hpp)

# ------------------------------------------------------------------ basics ---
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"
REPO_ROOT="$(cd "$SCRIPT_DIR/.." && pwd -P)"
OUT="$REPO_ROOT/csrc/luajit"

log()  { printf 'build_luajit: %s\n' "$*" >&2; }
die()  { printf 'build_luajit: error: %s\n' "$*" >&2; exit 1; }

FORCE=0
for arg in "$@"; do
  case "$arg" in
    --force|-f) FORCE=1 ;;
    -h|--help) sed -n '2,19p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument: $arg (try --help)" ;;
  esac
done

CC="${CC:-cc}"
JOBS="${JOBS:-$(nproc 2>/dev/null || echo 2)}"
CFLAGS_LJ='-O2 -fPIC'
XCFLAGS_LJ='-DLUAJIT_ENABLE_CHECKHOOK'

is_built() {
  [[ -f "$OUT/lib/libluajit.a" && -f "$OUT/BUILD_INFO" ]] || return 1
  local h
  for h in "${HEADERS[@]}"; do [[ -f "$OUT/include/$h" ]] || return 1; done
}

WORK=''; STAGE=''
cleanup() {
  if [[ -n "$WORK" && -d "$WORK" ]]; then rm -rf "$WORK"; fi
  if [[ -n "$STAGE" && -d "$STAGE" ]]; then rm -rf "$STAGE"; fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

new_work() {
  if [[ -z "$WORK" ]]; then
    WORK="$(mktemp -d "${TMPDIR:-/tmp}/polyplug-luajit.XXXXXX")"
  fi
}

# Results of a successful fetch route. The route_* functions run in an `if`
# condition, where set -e is off: every step that can fail has `|| return 1`.
SRC_DIR=''; ROUTE=''; VERSION_EXTRA=''; TARBALL_SHA='-'; PATCHES='none'

# ------------------------------------------------------------------ routes ---
route_env() {
  local given="$LUAJIT_SRC"
  [[ -f "$given/src/Makefile" ]] ||
    die "LUAJIT_SRC=$given is not a LuaJIT source tree (no src/Makefile)"
  given="$(cd "$given" && pwd -P)"
  new_work
  log "copying LUAJIT_SRC=$given"
  mkdir "$WORK/src-env"
  cp -a "$given/." "$WORK/src-env/"
  chmod -R u+w "$WORK/src-env"   # the user's tree may be read-only
  # Start from a clean tree whatever state the user's copy was in.
  make -s -C "$WORK/src-env/src" clean >/dev/null 2>&1 || true
  SRC_DIR="$WORK/src-env"
  ROUTE="LUAJIT_SRC $given"
  if [[ -d "$given/.git" ]] && command -v git >/dev/null 2>&1; then
    VERSION_EXTRA="git $(git -C "$given" rev-parse HEAD 2>/dev/null || echo unknown)"
  fi
}

has_deb_src() {
  # Ask apt which deb-src index targets are configured (any file, either format).
  local lines
  # shellcheck disable=SC2016  # apt's own $(FIELD) placeholders
  if lines="$(apt-get indextargets --no-release-info \
                --format '$(TARGET_OF) $(RELEASE) $(COMPONENT)' 2>/dev/null)"; then
    grep -qx "deb-src $DEB_SUITE main" <<<"$lines"
    return
  fi
  # Fallback for an apt without indextargets: scan the source lists.
  local f
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [[ -f "$f" ]] || continue
    grep -Eq "^[[:space:]]*deb-src[[:space:]]+(\[[^]]*\][[:space:]]+)?[^[:space:]]+[[:space:]]+${DEB_SUITE}[[:space:]].*\bmain\b" "$f" && return 0
  done
  for f in /etc/apt/sources.list.d/*.sources; do
    [[ -f "$f" ]] || continue
    awk -v suite="$DEB_SUITE" '
      BEGIN { RS=""; found=0 }
      /(^|\n)Types:[^\n]*deb-src/ && /(^|\n)Suites:[^\n]*/ && /(^|\n)Components:[^\n]*main/ {
        if (match($0, /(^|\n)Suites:[^\n]*/)) {
          s = substr($0, RSTART, RLENGTH); if (s ~ ("[ :]" suite "( |$)")) found=1 } }
      END { exit !found }' "$f" && return 0
  done
  return 1
}

apt_download() {
  (cd "$1" && timeout 300 apt-get source --download-only -q "luajit=$DEB_VERSION")
}

verify_sha256() {
  # verify_sha256 FILE EXPECTED: dies on mismatch, prints the sum otherwise.
  local sum
  sum="$(sha256sum "$1" | cut -d' ' -f1)"
  if [[ "$sum" != "$2" ]]; then
    die "sha256 mismatch for ${1##*/}: got $sum, expected $2 (refusing to build)"
  fi
  printf '%s\n' "$sum"
}

ensure_patch() {
  command -v patch >/dev/null 2>&1 && return 0
  if [[ "$(id -u)" -ne 0 ]]; then
    die "the Debian route needs GNU patch to apply Debian's CVE fixes, and it is not installed.
  Install it (e.g. 'sudo apt-get install patch'), run this script as root to have it installed,
  or point LUAJIT_SRC at a LuaJIT 2.1 source tree"
  fi
  log "debian route: installing patch (apt-get install -y --no-install-recommends patch)"
  if ! DEBIAN_FRONTEND=noninteractive timeout 300 \
        apt-get install -y -q --no-install-recommends patch >&2; then
    log "debian route: retrying after apt-get update"
    timeout 300 apt-get update -q >&2 || true
    DEBIAN_FRONTEND=noninteractive timeout 300 \
      apt-get install -y -q --no-install-recommends patch >&2 ||
      die "could not install patch with apt-get (needed to apply Debian's CVE fixes)"
  fi
  command -v patch >/dev/null 2>&1 || die "patch still not found after apt-get install"
}

apply_cve_patches() {
  # apply_cve_patches SRC DEBIAN_DIR: applies, in series order, the patches of
  # DEBIAN_DIR/patches/series whose names mention a CVE. Dies if one fails.
  local src="$1" pdir="$2/patches"
  local series="$pdir/series"
  [[ -f "$series" ]] || die "$DEB_DEBIAN has no debian/patches/series"
  local line name opts applied=()
  while IFS= read -r line || [[ -n "$line" ]]; do
    line="${line%%#*}"                                   # quilt comments
    read -r name opts <<<"$line" || true
    [[ -n "$name" ]] || continue
    grep -Eiq "$DEB_PATCH_RE" <<<"$name" || { log "debian route: skipping $name (not a CVE fix)"; continue; }
    [[ -z "$opts" || "$opts" == "-p1" ]] ||
      die "debian/patches/series: unsupported options for $name: $opts"
    [[ "$name" != /* && "$name" != *..* && -f "$pdir/$name" ]] ||
      die "debian/patches/series lists $name, which is not in debian/patches"
    log "debian route: applying $name"
    if ! patch -d "$src" -p1 --forward --batch --fuzz=0 --no-backup-if-mismatch \
          -i "$pdir/$name" >"$WORK/patch.log" 2>&1; then
      cat "$WORK/patch.log" >&2
      die "Debian patch $name does not apply to $DEB_ORIG (refusing to build without it)"
    fi
    applied+=("$name")
  done <"$series"
  [[ "${#applied[@]}" -gt 0 ]] || die "no CVE patches found in $DEB_DEBIAN debian/patches/series"
  PATCHES="${applied[*]}"
}

route_debian() {
  command -v apt-get >/dev/null 2>&1 || { log "debian route: apt-get not available"; return 1; }
  local updated=0
  if ! has_deb_src; then
    if [[ "$(id -u)" -ne 0 ]]; then
      log "debian route: no deb-src entry for $DEB_SUITE main and not root (cannot add one)"
      return 1
    fi
    log "debian route: adding $DEB_SRC_FILE"
    cat >"$DEB_SRC_FILE" <<EOF
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: $DEB_SUITE
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    log "debian route: apt-get update"
    timeout 300 apt-get update -q >&2 || log "debian route: apt-get update reported errors (continuing)"
    updated=1
  fi
  new_work || return 1
  local dl="$WORK/debian"
  mkdir "$dl" || return 1
  # Let apt's unprivileged _apt user write the download (avoids the sandbox warning).
  if [[ "$(id -u)" -eq 0 ]] && id _apt >/dev/null 2>&1; then
    chmod 0755 "$WORK"; chown _apt "$dl"
  fi
  log "debian route: apt-get source --download-only luajit=$DEB_VERSION"
  if ! apt_download "$dl" >&2; then
    # The deb-src entry may exist without its Sources index having been fetched.
    if [[ "$updated" -eq 0 && "$(id -u)" -eq 0 ]]; then
      log "debian route: retrying after apt-get update"
      timeout 300 apt-get update -q >&2 || true
      apt_download "$dl" >&2 || { log "debian route: apt-get source failed"; return 1; }
    else
      log "debian route: apt-get source failed"; return 1
    fi
  fi
  local tarball="$dl/$DEB_ORIG" debtar="$dl/$DEB_DEBIAN"
  [[ -f "$tarball" ]] || { log "debian route: $DEB_ORIG not downloaded"; return 1; }
  [[ -f "$debtar" ]] || { log "debian route: $DEB_DEBIAN not downloaded"; return 1; }
  local sum
  sum="$(verify_sha256 "$tarball" "$DEB_ORIG_SHA256")" || exit 1
  verify_sha256 "$debtar" "$DEB_DEBIAN_SHA256" >/dev/null || exit 1
  log "debian route: sha256 OK ($DEB_ORIG, $DEB_DEBIAN)"
  ensure_patch
  mkdir "$WORK/debian-pkg" || return 1
  tar -xJf "$debtar" -C "$WORK/debian-pkg" debian/patches ||
    die "cannot extract debian/patches from $DEB_DEBIAN (is xz installed?)"
  mkdir "$WORK/src-deb" || return 1
  # The dfsg orig tarball has no top-level directory; detect either layout.
  tar -xzf "$tarball" -C "$WORK/src-deb" || { log "debian route: cannot extract $DEB_ORIG"; return 1; }
  if [[ -f "$WORK/src-deb/src/Makefile" ]]; then
    SRC_DIR="$WORK/src-deb"
  else
    SRC_DIR="$(dirname "$(dirname "$(find "$WORK/src-deb" -maxdepth 3 -path '*/src/Makefile' | head -n1)")")"
    [[ -f "$SRC_DIR/src/Makefile" ]] || { log "debian route: no src/Makefile in tarball"; return 1; }
  fi
  apply_cve_patches "$SRC_DIR" "$WORK/debian-pkg/debian"
  ROUTE="debian luajit=$DEB_VERSION ($DEB_ORIG + CVE patches from $DEB_DEBIAN)"
  VERSION_EXTRA="debian $DEB_VERSION"
  TARBALL_SHA="$sum"
}

route_git() {
  command -v git >/dev/null 2>&1 || { log "git route: git not available"; return 1; }
  new_work || return 1
  local d="$WORK/src-git"
  log "git route: fetching $GIT_URL $GIT_COMMIT (branch $GIT_BRANCH)"
  git init -q "$d" || return 1
  if ! GIT_TERMINAL_PROMPT=0 timeout 60 git -C "$d" fetch -q --depth 1 "$GIT_URL" "$GIT_COMMIT" >&2; then
    log "git route: fetch failed (no network access to $GIT_URL?)"; return 1
  fi
  git -C "$d" -c advice.detachedHead=false checkout -q FETCH_HEAD || return 1
  [[ "$(git -C "$d" rev-parse HEAD)" == "$GIT_COMMIT" ]] || { log "git route: commit mismatch"; return 1; }
  if ! grep -qs 'LuaJIT 2\.1' "$d/src/luajit_rolling.h" "$d/src/luajit.h"; then
    log "git route: $GIT_COMMIT is not a LuaJIT 2.1 tree"; return 1
  fi
  SRC_DIR="$d"
  ROUTE="git $GIT_URL $GIT_BRANCH@$GIT_COMMIT"
  VERSION_EXTRA="git $GIT_COMMIT"
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
  local src="$1"
  local bits gc64
  # shellcheck disable=SC2086
  bits="$($CC -E -dM "$src/src/lj_arch.h" 2>/dev/null | awk '$2=="LJ_ARCH_BITS"{print $3}')"
  # shellcheck disable=SC2086
  gc64="$(check_gc64 "$src" $XCFLAGS_LJ)"
  if [[ "$gc64" != 1 ]]; then
    if [[ "$bits" == 64 ]]; then
      log "GC64 is not the default for this snapshot; adding -DLUAJIT_ENABLE_GC64"
      XCFLAGS_LJ="$XCFLAGS_LJ -DLUAJIT_ENABLE_GC64"
      # shellcheck disable=SC2086
      gc64="$(check_gc64 "$src" $XCFLAGS_LJ)"
      [[ "$gc64" == 1 ]] || die "could not enable GC64 mode for this LuaJIT source"
    else
      log "warning: ${bits:-unknown}-bit target, GC64 not available"
    fi
  fi
  GC64="$gc64"

  local targets=(libluajit.a)
  # Newer 2.1 trees generate luajit.h from luajit_rolling.h; older ones ship it.
  if [[ -f "$src/src/luajit_rolling.h" ]]; then targets+=(luajit.h); fi

  log "building ${targets[*]} (CC=$CC CFLAGS='$CFLAGS_LJ' XCFLAGS='$XCFLAGS_LJ' -j$JOBS)"
  if ! make -C "$src/src" -j"$JOBS" "${targets[@]}" \
        BUILDMODE=static CC="$CC" CFLAGS="$CFLAGS_LJ" XCFLAGS="$XCFLAGS_LJ" \
        >"$WORK/make.log" 2>&1; then
    tail -n 40 "$WORK/make.log" >&2
    die "LuaJIT build failed (log above)"
  fi
  [[ -f "$src/src/libluajit.a" ]] || die "build produced no libluajit.a"
  local h
  for h in "${HEADERS[@]}"; do
    [[ -f "$src/src/$h" ]] || die "header $h missing from LuaJIT source after build"
  done

  # The library ends up inside a Python extension module: prove it is PIC.
  # shellcheck disable=SC2086
  if ! $CC -shared -o "$WORK/pic-check.so" \
        -Wl,--whole-archive "$src/src/libluajit.a" -Wl,--no-whole-archive \
        -lm -ldl >"$WORK/pic.log" 2>&1; then
    cat "$WORK/pic.log" >&2
    die "libluajit.a cannot be linked into a shared object (not PIC?)"
  fi
}

install_out() {
  local src="$1"
  local version
  version="$(sed -n 's/^#define LUAJIT_VERSION[[:space:]]*"\(.*\)"/\1/p' "$src/src/luajit.h" | head -n1)"
  [[ -n "$version" ]] || version="unknown"
  [[ -n "$VERSION_EXTRA" ]] && version="$version ($VERSION_EXTRA)"

  mkdir -p "$REPO_ROOT/csrc"
  STAGE="$(mktemp -d "$REPO_ROOT/csrc/.luajit.stage.XXXXXX")"
  local stage="$STAGE"
  mkdir -p "$stage/lib" "$stage/include"
  cp "$src/src/libluajit.a" "$stage/lib/"
  local h
  for h in "${HEADERS[@]}"; do cp "$src/src/$h" "$stage/include/"; done
  {
    printf 'route: %s\n' "$ROUTE"
    printf 'version: %s\n' "$version"
    printf 'sha256: %s\n' "$TARBALL_SHA"
    printf 'patches: %s\n' "$PATCHES"
    printf 'gc64: %s\n' "$GC64"
    printf 'flags: CC=%s CFLAGS=%s XCFLAGS=%s BUILDMODE=static\n' "$CC" "$CFLAGS_LJ" "$XCFLAGS_LJ"
  } >"$stage/BUILD_INFO"
  chmod 0755 "$stage"
  rm -rf "$OUT"
  mv "$stage" "$OUT"
  STAGE=''
  log "installed $version into ${OUT#"$REPO_ROOT"/}"
  sed 's/^/  /' "$OUT/BUILD_INFO" >&2
}

# -------------------------------------------------------------------- main ---
GC64='?'
if [[ -n "${LUAJIT_SRC:-}" ]]; then
  route_env
else
  if [[ "$FORCE" -eq 0 ]] && is_built; then
    echo "build_luajit: csrc/luajit is already built ($(sed -n 's/^version: //p' "$OUT/BUILD_INFO")); nothing to do (use --force to rebuild)"
    exit 0
  fi
  if ! route_debian && ! route_git; then
    die "could not obtain LuaJIT 2.1 source. Either give this machine network access to Debian's
  mirrors (a deb-src entry for '$DEB_SUITE main' and 'apt-get source luajit=$DEB_VERSION' must work;
  as root the script adds $DEB_SRC_FILE itself), or to $GIT_URL, or point
  LUAJIT_SRC at a LuaJIT 2.1 source tree: LUAJIT_SRC=/path/to/luajit-2.1 $0"
  fi
fi

build "$SRC_DIR"
install_out "$SRC_DIR"
