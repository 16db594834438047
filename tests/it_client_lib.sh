#!/usr/bin/env bash
# libvpmuclient as an agent gets it: installed (DESTDIR stage, --prefix /usr),
# a program built with `pkg-config --cflags --libs vpmu-client` against the
# stage only, run against a real vpmud (model PMU, --kvm model, private
# socket and state, no D-Bus, no libvirt). Also: the library's soname, that
# it exports exactly the functions include/vpmu/client.h declares, and that
# it needs nothing of the project at run time (proto is inside).
set -u
src=${VPMU_SOURCE_DIR:?}
b=${VPMU_BUILD_DIR:?}
cache() { sed -n "s/^$1:[A-Z]*=//p" "$b/CMakeCache.txt" | head -1; }
if [ ! -e "$b/client/libvpmuclient.so" ]; then
	echo "skip: $b has no libvpmuclient.so (not built in this tree)"
	exit 77
fi
for tool in pkg-config nm readelf; do
	command -v "$tool" >/dev/null || { echo "skip: $tool missing"; exit 77; }
done

tmp=$(mktemp -d /tmp/vpmu-clientlib.XXXXXX)
vpmud_pid=
cleanup() {
	[ -n "$vpmud_pid" ] && kill "$vpmud_pid" 2>/dev/null && wait "$vpmud_pid" 2>/dev/null
	rm -rf "$tmp"
}
trap cleanup EXIT
fails=0
ok() { echo "ok   $*"; }
fail() { echo "FAIL $*"; fails=$((fails + 1)); }
expect() { # got want ok-message fail-message
	if [ "$1" = "$2" ]; then ok "$3"; else fail "$4"; fi
}

stage=$tmp/stage
if ! DESTDIR=$stage cmake --install "$b" --prefix /usr >"$tmp/install.log" 2>&1; then
	cat "$tmp/install.log"; echo "FAIL cmake --install"; exit 1
fi
libdir=/usr/$(cache CMAKE_INSTALL_LIBDIR)
lib=$stage$libdir/libvpmuclient.so.0

# ---- the shared object ------------------------------------------------------
soname=$(readelf -d "$lib" | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')
expect "$soname" libvpmuclient.so.0 "soname $soname" "soname is '$soname', want libvpmuclient.so.0"
link=$(readlink "$stage$libdir/libvpmuclient.so")
expect "$link" libvpmuclient.so.0 "libvpmuclient.so -> $link" "libvpmuclient.so points to '$link'"
if readelf -d "$lib" | grep -q '(RPATH)\|(RUNPATH)'; then
	fail "the installed library keeps a run path: $(readelf -d "$lib" | grep 'R.*PATH')"
else
	ok "no RPATH/RUNPATH in the installed library"
fi
# Run-time dependencies: json-c and libc (and the sanitizer runtimes in a
# sanitizer build), never libvirt, libsystemd, libxml2 or a vpmu library.
needed=$(readelf -d "$lib" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | grep -v '^libasan\|^libubsan\|^libstdc++\|^libm\.\|^libgcc_s' | sort | tr '\n' ' ')
expect "$needed" "libc.so.6 libjson-c.so.5 " "needs only: $needed" "libvpmuclient needs: $needed (want libc.so.6 libjson-c.so.5)"

# Exports: exactly the functions the header declares (static inline ones are
# the caller's), each in the version node of the map.
# Declarations only: a line that starts with a type and names the function
# (comments and the static inline helpers do not match).
sed -n '/^static/!s/^[a-z][a-z0-9_ ]*[ *]\(vpmu_client_[a-z_]*\)(.*/\1/p' "$src/include/vpmu/client.h" | sort -u >"$tmp/header"
nm -D --defined-only "$lib" | awk '$2 != "A" { print $3 }' | sed 's/@.*//' | sort -u >"$tmp/exported"
if [ -s "$tmp/header" ] && diff -u "$tmp/header" "$tmp/exported" >"$tmp/sym.diff"; then
	ok "exports the $(wc -l <"$tmp/header") functions of vpmu/client.h and nothing else"
else
	fail "exports differ from the header ('-' declared, not exported; '+' exported, not declared):"
	sed -n '3,$p' "$tmp/sym.diff"
fi
nodes=$(nm -D --defined-only "$lib" | sed -n 's/.*@@\(.*\)/\1/p' | sort -u | tr '\n' ' ')
expect "$nodes" "VPMU_CLIENT_0.1 " "every export in version node VPMU_CLIENT_0.1" "version nodes: '$nodes'"

# ---- an agent built against the stage ---------------------------------------
export PKG_CONFIG_PATH=$stage$libdir/pkgconfig PKG_CONFIG_SYSROOT_DIR=$stage
if ! flags=$(pkg-config --cflags --libs vpmu-client 2>"$tmp/pc.err"); then
	cat "$tmp/pc.err"; fail "pkg-config vpmu-client"; exit 1
fi
ok "pkg-config --cflags --libs vpmu-client: $flags"
case " $flags " in
*" -I$stage/usr/include "*" -L$stage$libdir "*) ok "the flags point into the stage" ;;
*) fail "the flags do not point into the stage ($stage/usr/include, $stage$libdir)" ;;
esac
cc=$(cache CMAKE_C_COMPILER)
san=()
# The library of a sanitizer build needs its runtime loaded first.
[ "$(cache VPMU_SANITIZE)" = ON ] && san=("-fsanitize=address,undefined")
# shellcheck disable=SC2086 # pkg-config's flags are words
if ! "${cc:-cc}" -std=gnu11 -Wall -Wextra -Werror "${san[@]}" -o "$tmp/client_agent" \
	"$src/tests/fixtures/client_agent.c" $flags >"$tmp/cc.log" 2>&1; then
	cat "$tmp/cc.log"; fail "building the agent against the stage"; exit 1
fi
ok "agent built with the installed header and library"
resolved=$(LD_LIBRARY_PATH=$stage$libdir ldd "$tmp/client_agent" | sed -n 's/.*libvpmuclient.so.0 => \([^ ]*\).*/\1/p')
expect "$resolved" "$stage$libdir/libvpmuclient.so.0" "the agent loads the staged library" \
	"the agent loads libvpmuclient.so.0 from '$resolved'"

# ---- against a running vpmud --------------------------------------------------
sock=$tmp/vpmud.sock
: >"$tmp/vpmud.conf"
"$b/vpmud" --pmu icelake-8360y --kvm model --dbus none --libvirt-uri none --socket "$sock" \
	--state-dir "$tmp/state" --config "$tmp/vpmud.conf" 2>"$tmp/vpmud.log" &
vpmud_pid=$!
for _ in $(seq 200); do
	"$b/client/vpmuctl" --socket "$sock" status >/dev/null 2>&1 && break
	kill -0 "$vpmud_pid" 2>/dev/null || break
	sleep 0.05
done
if ! "$b/client/vpmuctl" --socket "$sock" status >/dev/null 2>&1; then
	cat "$tmp/vpmud.log"; fail "vpmud did not come up"; exit 1
fi

if ! LD_LIBRARY_PATH=$stage$libdir "$tmp/client_agent" "$sock" agent-vm >"$tmp/out" 2>"$tmp/err"; then
	cat "$tmp/out" "$tmp/err"; fail "the agent failed"
fi
cat >"$tmp/want" <<'EOF'
server vpmud/@VERSION@
status pmu icelake-8360y simulated true kvm model
watching from generation 0
attached agent-vm generation 1
event plan generation 1
vm agent-vm gp 2
vm.show no-such-vm: not_found (remote yes)
detached agent-vm
EOF
server=$("$b/client/vpmuctl" --socket "$sock" --json status | python3 -c 'import json, sys; print(json.load(sys.stdin)["server"])')
sed -i "s|vpmud/@VERSION@|$server|" "$tmp/want"
if diff -u "$tmp/want" "$tmp/out" >"$tmp/out.diff"; then
	ok "the agent talked to vpmud: status, watch, vm.attach, its plan event, vm.list, an error, vm.detach"
else
	fail "the agent's output differs ('-' expected, '+' printed):"
	sed -n '3,$p' "$tmp/out.diff"
	cat "$tmp/err"
fi
# What the agent did is what vpmud holds: the VM came and went.
if ! list=$("$b/client/vpmuctl" --socket "$sock" --json vm list); then
	fail "vpmuctl vm list"
elif [ "$(echo "$list" | python3 -c 'import json, sys; print(len(json.load(sys.stdin)["vms"]))')" != 0 ]; then
	fail "VMs left after the agent detached its own: $list"
else
	ok "vpmuctl sees no VM left"
fi

[ "$fails" -eq 0 ] || { echo "$fails failure(s)"; exit 1; }
