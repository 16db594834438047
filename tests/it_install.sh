#!/usr/bin/env bash
# cmake --install puts every piece where a Debian host expects it (staged
# with DESTDIR, relative to the prefix the build was configured with).
set -u
b=${VPMU_BUILD_DIR:?}
stage=$(mktemp -d /tmp/vpmu-install.XXXXXX)
trap 'rm -rf "$stage"' EXIT
if ! DESTDIR=$stage cmake --install "$b" >"$stage.log" 2>&1; then
  cat "$stage.log"; rm -f "$stage.log"; echo "FAIL cmake --install"; exit 1
fi
rm -f "$stage.log"
prefix=$(sed -n 's/^CMAKE_INSTALL_PREFIX:PATH=//p' "$b/CMakeCache.txt")
etc=$prefix/etc
[ "$prefix" = /usr ] && etc=/etc
fails=0
want() { # kind path
  if [ "$1" "$stage$2" ]; then echo "ok   $2"; else echo "FAIL $2 missing"; fails=$((fails + 1)); fi
}
want -x "$prefix/sbin/vpmud"
want -x "$prefix/bin/vpmuctl"
want -x "$prefix/libexec/vpmu/vpmu-libvirt-hook"
want -L "$etc/libvirt/hooks/qemu.d/vpmu"
want -f "$etc/vpmu/vpmud.conf"
want -f /lib/systemd/system/vpmud.service
want -f /lib/systemd/system/vpmud.socket
want -f /usr/lib/sysusers.d/vpmu.conf
# D-Bus and polkit read these from /usr/share: install with
# -DCMAKE_INSTALL_PREFIX=/usr on a real host (docs/architecture.md).
want -f "$prefix/share/dbus-1/system.d/org.vpmu.Broker1.conf"
want -f "$prefix/share/dbus-1/system-services/org.vpmu.Broker1.service"
want -f "$prefix/share/dbus-1/interfaces/org.vpmu.Broker1.Manager.xml"
want -f "$prefix/share/polkit-1/actions/org.vpmu.broker1.policy"
link=$(readlink "$stage$etc/libvirt/hooks/qemu.d/vpmu")
if [ "$link" = "$prefix/libexec/vpmu/vpmu-libvirt-hook" ]; then echo "ok   hook link -> $link"
else echo "FAIL hook link points to '$link'"; fails=$((fails + 1)); fi
# The installed config file is one vpmud accepts.
if "$b/vpmud" --config "$stage$etc/vpmu/vpmud.conf" --print-pmu >/dev/null 2>&1; then echo "ok   installed vpmud.conf parses"
else echo "FAIL installed vpmud.conf refused"; fails=$((fails + 1)); fi
[ "$fails" -eq 0 ] || { echo "$fails failure(s)"; exit 1; }
