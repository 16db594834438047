#!/usr/bin/env bash
# cmake --install puts every piece where a Debian host expects it, staged
# with DESTDIR and compared file by file (path, mode, link target) with the
# list below, for each way of giving the prefix:
#   built    the prefix the build was configured with (default /usr/local:
#            config under /usr/local/etc, as GNUInstallDirs says)
#   install  `cmake --install --prefix /usr`: the prefix given only when
#            installing (config in /etc, hook link in /etc/libvirt)
#   config   -DCMAKE_INSTALL_PREFIX=/usr at configure time: a throw-away
#            build tree (Debug, only when the build under test is not
#            already configured for /usr; not in sanitizer or fuzz builds,
#            whose install layout is the same)
set -u
src=${VPMU_SOURCE_DIR:?}
b=${VPMU_BUILD_DIR:?}
tmp=$(mktemp -d /tmp/vpmu-install.XXXXXX)
trap 'rm -rf "$tmp"' EXIT

# ---- what is installed ------------------------------------------------------
# One line per installed file or symlink (directories are not listed):
#   <mode> <path>            a file and its octal mode
#   link <path> -> <target>  a symlink and where it points, verbatim
# optionally preceded by [VAR]: only when the cache variable VAR is ON, or
# [?VAR]: only when the cache defines VAR (a part that may be absent).
# Placeholders, filled in for each prefix:
#   {prefix}   the install prefix           {etc}  its sysconfdir (/etc for /usr)
#   {libdir}   the prefix's libdir ({prefix}/lib/x86_64-linux-gnu when /usr
#              is given at configure time on Debian, else {prefix}/lib)
#   {cache:VAR} the value of VAR in the build's CMakeCache.txt (directories
#              that come from pkg-config, e.g. systemd's unit directory)
#   {dir:VAR}  the cache's directory VAR as install(DESTINATION) takes it:
#              relative ones under the prefix (e.g. VPMU_CATALOGDIR)
# A new install() rule adds its line(s) here.
expected() {
	cat <<'EOF'
755 {prefix}/sbin/vpmud
755 {prefix}/bin/vpmuctl
755 {prefix}/libexec/vpmu/vpmu-libvirt-hook
[VPMU_INSTALL_LIBVIRT_HOOK] link {etc}/libvirt/hooks/qemu.d/vpmu -> {prefix}/libexec/vpmu/vpmu-libvirt-hook
644 {etc}/vpmu/vpmud.conf
644 {cache:VPMU_SYSTEMD_UNITDIR}/vpmud.service
644 {cache:VPMU_SYSTEMD_UNITDIR}/vpmud.socket
644 {cache:VPMU_SYSUSERSDIR}/vpmu.conf
644 {prefix}/share/dbus-1/system.d/org.vpmu.Broker1.conf
644 {prefix}/share/dbus-1/system-services/org.vpmu.Broker1.service
644 {prefix}/share/dbus-1/interfaces/org.vpmu.Broker1.Manager.xml
644 {prefix}/share/dbus-1/interfaces/org.vpmu.Broker1.VM.xml
644 {prefix}/share/dbus-1/interfaces/org.vpmu.Broker1.Session.xml
644 {prefix}/share/polkit-1/actions/org.vpmu.broker1.policy
644 {prefix}/include/vpmu/client.h
644 {libdir}/libvpmuclient.so.0.1.0
link {libdir}/libvpmuclient.so.0 -> libvpmuclient.so.0.1.0
link {libdir}/libvpmuclient.so -> libvpmuclient.so.0
644 {libdir}/pkgconfig/vpmu-client.pc
[VPMU_MAN] 644 {prefix}/share/man/man8/vpmud.8
[VPMU_MAN] 644 {prefix}/share/man/man1/vpmuctl.1
[VPMU_MAN] 644 {prefix}/share/man/man5/vpmud.conf.5
[VPMU_MAN] 644 {prefix}/share/man/man8/vpmu-libvirt-hook.8
[?VPMU_BASH_COMPLETION_DIR] 644 {dir:VPMU_BASH_COMPLETION_DIR}/vpmuctl
[?VPMU_CATALOGDIR] 644 {dir:VPMU_CATALOGDIR}/vpmu.catalog
EOF
}
# ------------------------------------------------------------------------------

cache() { # build var
	sed -n "s/^$2:[A-Z]*=//p" "$1/CMakeCache.txt" | head -1
}
cache_on() { # build var
	case "$(cache "$1" "$2" | tr '[:lower:]' '[:upper:]')" in
	ON | 1 | YES | TRUE | Y) return 0 ;;
	*) return 1 ;;
	esac
}

fails=0
fail() { echo "FAIL $*"; fails=$((fails + 1)); }

# The list for one install: build tree, prefix, etc, libdir.
want_list() {
	local build=$1 prefix=$2 etc=$3 libdir=$4 line var value
	expected | while IFS= read -r line; do
		[ -n "$line" ] || continue
		if [[ $line =~ ^\[\?([A-Za-z0-9_]+)\]\ (.*)$ ]]; then
			grep -q "^${BASH_REMATCH[1]}:" "$build/CMakeCache.txt" || continue
			line=${BASH_REMATCH[2]}
		elif [[ $line =~ ^\[([A-Za-z0-9_]+)\]\ (.*)$ ]]; then
			cache_on "$build" "${BASH_REMATCH[1]}" || continue
			line=${BASH_REMATCH[2]}
		fi
		while [[ $line =~ \{cache:([A-Za-z0-9_]+)\} ]]; do
			var=${BASH_REMATCH[1]}
			line=${line//"{cache:$var}"/$(cache "$build" "$var")}
		done
		while [[ $line =~ \{dir:([A-Za-z0-9_]+)\} ]]; do
			var=${BASH_REMATCH[1]}
			value=$(cache "$build" "$var")
			[[ $value == /* ]] || value=$prefix/$value
			line=${line//"{dir:$var}"/$value}
		done
		line=${line//"{prefix}"/$prefix}
		line=${line//"{etc}"/$etc}
		line=${line//"{libdir}"/$libdir}
		echo "$line"
	done | sort
}

got_list() { # stage
	(cd "$1" && find . -mindepth 1 \( -type f -printf '%m /%P\n' \) -o \( -type l -printf 'link /%P -> %l\n' \) \
		-o \( ! -type d -printf 'unexpected-type /%P\n' \)) | sort
}

# check <name> <build> <stage> <prefix> <etc> <libdir>
check() {
	local name=$1 build=$2 stage=$3 prefix=$4 etc=$5 libdir=$6
	want_list "$build" "$prefix" "$etc" "$libdir" >"$tmp/$name.want"
	got_list "$stage" >"$tmp/$name.got"
	if diff -u "$tmp/$name.want" "$tmp/$name.got" >"$tmp/$name.diff"; then
		echo "ok   $name: $(wc -l <"$tmp/$name.got") files and links as listed (prefix $prefix, config in $etc)"
	else
		fail "$name: the staged tree differs from the list ('-' listed, not installed; '+' installed, not listed):"
		sed -n '3,$p' "$tmp/$name.diff" | grep '^[-+]'
	fi
	# The installed config file is the shipped one, which test_config
	# parses with every example line uncommented.
	if cmp -s "$stage$etc/vpmu/vpmud.conf" "$src/daemon/vpmud.conf"; then
		echo "ok   $name: installed vpmud.conf is daemon/vpmud.conf (test_config parses its examples)"
	else
		fail "$name: installed vpmud.conf differs from daemon/vpmud.conf"
	fi
	# vpmu-client.pc names where the library and header were put.
	local pc="$stage$libdir/pkgconfig/vpmu-client.pc" pcwant
	pcwant=$(printf 'prefix=%s\nlibdir=%s\nincludedir=%s' "$prefix" "$libdir" "$prefix/include")
	if [ -f "$pc" ] && [ "$(head -3 "$pc")" = "$pcwant" ]; then
		echo "ok   $name: vpmu-client.pc points into $prefix"
	else
		fail "$name: vpmu-client.pc says '$(head -3 "$pc" 2>/dev/null | tr '\n' ' ')', want '$(echo "$pcwant" | tr '\n' ' ')'"
	fi
}

install_to() { # build stage [cmake --install args]
	local build=$1 stage=$2
	shift 2
	if ! DESTDIR=$stage cmake --install "$build" "$@" >"$stage.log" 2>&1; then
		cat "$stage.log"
		fail "cmake --install $build $*"
		return 1
	fi
}

etc_of() { # prefix -> sysconfdir, as GNUInstallDirs maps it
	case "$1" in
	/ | /usr) echo /etc ;;
	/opt/*) echo "/etc$1" ;;
	*) echo "$1/etc" ;;
	esac
}

prefix=$(cache "$b" CMAKE_INSTALL_PREFIX)
prefix=${prefix%/}
libdir=$(cache "$b" CMAKE_INSTALL_LIBDIR)

# 1. The prefix of the build.
if install_to "$b" "$tmp/built"; then
	check built "$b" "$tmp/built" "$prefix" "$(etc_of "$prefix")" "$prefix/$libdir"
fi

# 2. --prefix /usr given only to cmake --install.
if install_to "$b" "$tmp/install" --prefix /usr; then
	check install "$b" "$tmp/install" /usr /etc "/usr/$libdir"
fi

# 3. -DCMAKE_INSTALL_PREFIX=/usr given at configure time.
if [ "$prefix" = /usr ]; then
	echo "ok   config: the build under test is configured for /usr (case 1)"
elif cache_on "$b" VPMU_SANITIZE || cache_on "$b" VPMU_FUZZ; then
	echo "skip config: a sanitizer build installs the same tree; the plain build checks it"
else
	cb=$tmp/build-usr
	if ! cmake -S "$src" -B "$cb" -DCMAKE_BUILD_TYPE=Debug -DCMAKE_INSTALL_PREFIX=/usr >"$tmp/config.log" 2>&1 ||
		! cmake --build "$cb" -j2 >>"$tmp/config.log" 2>&1; then
		tail -40 "$tmp/config.log"
		fail "configure and build with -DCMAKE_INSTALL_PREFIX=/usr"
	elif install_to "$cb" "$tmp/config"; then
		check config "$cb" "$tmp/config" /usr /etc "/usr/$(cache "$cb" CMAKE_INSTALL_LIBDIR)"
	fi
fi

[ "$fails" -eq 0 ] || { echo "$fails failure(s)"; exit 1; }
