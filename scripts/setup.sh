#!/usr/bin/env bash
# Installs what vpmu needs on Debian 12 (as root): the Debian packages and
# libperf, which Debian does not package and which we build from the kernel's
# own tools/lib/perf in Debian's linux-source-6.12. Safe to run again: every
# step is skipped when its result is already in place.
set -euo pipefail

LIBPERF_PREFIX=${VPMU_LIBPERF_PREFIX:-/usr/local/libperf}
KSRC_PKG=linux-source-6.12
KSRC_TARBALL=/usr/src/linux-source-6.12.tar.xz

PACKAGES=(
  build-essential cmake pkg-config git
  libsystemd-dev libjson-c-dev libvirt-dev libxml2-dev libcmocka-dev
  "$KSRC_PKG" xz-utils
  clang libclang-rt-14-dev   # libFuzzer and sanitizers
  linux-perf                 # perf stat cross-check of session counts
  qemu-system-x86            # a real VMM for VM discovery tests
  dbus python3-dbusmock      # private bus and polkit mock for D-Bus tests
  libvirt-daemon libvirt-clients   # libvirt test driver and virsh
  systemd                    # systemd-analyze verify/security on our units
  procps psmisc util-linux passwd
  scdoc groff-base man-db     # man pages: built with scdoc, rendered in a test
  bash-completion             # vpmuctl's completion: installed where it says, driven in a test
  prometheus prometheus-node-exporter   # promtool checks the metrics file; node_exporter scrapes it
)

log() { printf 'setup: %s\n' "$*" >&2; }

if [ "$(id -u)" -ne 0 ]; then
  log "must run as root (it installs Debian packages and libperf)"
  exit 1
fi

missing=()
for p in "${PACKAGES[@]}"; do
  [[ $p == \#* ]] && continue
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y --no-install-recommends "${missing[@]}" >/tmp/vpmu-apt.log 2>&1; then
    log "apt-get install failed, refreshing package lists and retrying"
    apt-get update >>/tmp/vpmu-apt.log 2>&1 || true
    apt-get install -y --no-install-recommends "${missing[@]}" >>/tmp/vpmu-apt.log 2>&1 || {
      tail -20 /tmp/vpmu-apt.log >&2; log "apt-get install failed (log: /tmp/vpmu-apt.log)"; exit 1; }
  fi
else
  log "Debian packages: all present"
fi

if [ -f "$LIBPERF_PREFIX/lib64/libperf.a" ] && [ -f "$LIBPERF_PREFIX/lib64/pkgconfig/libperf.pc" ] \
   && [ -f "$LIBPERF_PREFIX/include/perf/evlist.h" ] && [ -f "$LIBPERF_PREFIX/lib64/libapi.a" ]; then
  log "libperf: present in $LIBPERF_PREFIX"
  exit 0
fi

log "libperf: building from $KSRC_TARBALL into $LIBPERF_PREFIX"
work=$(mktemp -d /tmp/vpmu-libperf.XXXXXX)
trap 'rm -rf "$work"' EXIT
top=linux-source-6.12
# Only what tools/lib/perf's Makefile reaches: the library itself, libapi,
# the tools copies of kernel headers, and the build machinery.
tar -xJf "$KSRC_TARBALL" -C "$work" \
  "$top/tools/lib/perf" "$top/tools/lib/api" "$top/tools/lib/ctype.c" \
  "$top/tools/lib/str_error_r.c" "$top/tools/lib/string.c" "$top/tools/lib/zalloc.c" \
  "$top/tools/include" "$top/tools/build" "$top/tools/scripts" \
  "$top/tools/arch/x86/include" "$top/tools/arch/x86/lib" 2>/dev/null || true
if [ ! -f "$work/$top/tools/lib/perf/Makefile" ]; then
  log "could not extract tools/lib/perf from $KSRC_TARBALL"; exit 1
fi
make -C "$work/$top/tools/lib/perf" -j"$(nproc)" prefix="$LIBPERF_PREFIX" \
  libdir_relative=lib64 install_lib install_headers install_pkgconfig >"$work/build.log" 2>&1 || {
  tail -30 "$work/build.log" >&2; log "libperf build failed"; exit 1; }
# libperf.a needs libapi's fdarray (evlist polling) but its install target
# leaves libapi.a out; static users link both, as libperf's own tests do.
make -C "$work/$top/tools/lib/api" -j"$(nproc)" >>"$work/build.log" 2>&1 || {
  tail -30 "$work/build.log" >&2; log "libapi build failed"; exit 1; }
install -m 0644 "$work/$top/tools/lib/api/libapi.a" "$LIBPERF_PREFIX/lib64/libapi.a"
log "libperf: installed ($(ls "$LIBPERF_PREFIX"/lib64/libperf.a "$LIBPERF_PREFIX"/lib64/libapi.a))"
