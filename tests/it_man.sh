#!/usr/bin/env bash
# The man pages (docs/man/*.scd, built into $VPMU_BUILD_DIR/docs/man):
# - each built page renders with groff (-ww: every warning) and man -l
#   without a word on stderr;
# - they do not drift from the code: every command and option of
#   'vpmuctl --help' is described in vpmuctl.1.scd, every option of
#   'vpmud --help' in vpmud.8.scd, and no option is described that the
#   program does not take; every key proto/config.c accepts is described in
#   vpmud.conf.5.scd and in docs/config.md;
# - cmake --install puts them under share/man/man{1,5,8}.
# Each check prints "ok" or "FAIL"; any FAIL exits 1.
set -u

S=${VPMU_SOURCE_DIR:-$(dirname "$0")/..}
B=${VPMU_BUILD_DIR:-$S/build}
S=$(cd "$S" && pwd) || exit 1
B=$(cd "$B" && pwd) || exit 1
M=$B/docs/man
PAGES="vpmud.8 vpmuctl.1 vpmud.conf.5 vpmu-libvirt-hook.8"

if grep -q '^VPMU_MAN:BOOL=OFF' "$B/CMakeCache.txt" 2>/dev/null; then
	echo "skip: configured with -DVPMU_MAN=OFF"
	exit 77
fi
for t in groff man; do
	command -v $t >/dev/null || { echo "skip: $t missing (Debian: groff-base, man-db)"; exit 77; }
done
for f in "$B/vpmud" "$B/client/vpmuctl"; do
	[ -x "$f" ] || { echo "skip: $f not built"; exit 77; }
done

T=$(mktemp -d /tmp/vpmu-it-man.XXXXXX)
failures=0
trap 'rm -rf "$T"' EXIT

ok() { echo "ok   $*"; }
fail() {
	echo "FAIL $*"
	failures=$((failures + 1))
}
# shows a file's lines indented, for a failure
show() { sed 's/^/  | /' "$1"; }

# ------------------------------------------------------------ rendering
for p in $PAGES; do
	f=$M/$p
	if [ ! -s "$f" ]; then
		fail "$p: not built ($f)"
		continue
	fi
	groff -man -Tutf8 -ww -z "$f" 2>"$T/err"
	rc=$?
	if [ "$rc" -eq 0 ] && [ ! -s "$T/err" ]; then
		ok "$p: groff -man -Tutf8 -ww renders it without a warning"
	else
		fail "$p: groff -man -Tutf8 -ww: exit $rc"
		show "$T/err"
	fi
	# man-db as a user runs it, every groff warning on; not a terminal, so
	# no pager
	LC_ALL=C.UTF-8 MANWIDTH=80 man --warnings=w -l "$f" >"$T/out" 2>"$T/err"
	rc=$?
	name=${p%.*}
	section=${p##*.}
	if [ "$rc" -eq 0 ] && [ ! -s "$T/err" ] && grep -q "^NAME" "$T/out" &&
		grep -Eq "^ +$name - " "$T/out" && head -1 "$T/out" | grep -Fq "$name($section)"; then
		ok "$p: man -l renders it without a warning, title $name($section), NAME line"
	else
		fail "$p: man -l: exit $rc"
		show "$T/err"
		head -5 "$T/out" | sed 's/^/  out | /'
	fi
done

# ------------------------------------------------------------ drift: vpmuctl
scd=$S/docs/man/vpmuctl.1.scd
"$B/client/vpmuctl" --help >"$T/help"
# "  vm attach NAME [--priority P] ...": the command is the lower-case words
# before the first argument; descriptions start after two spaces.
grep -E '^  [a-z]' "$T/help" | sed -E 's/^  //; s/  .*//' | grep -oE '^[a-z]+( [a-z]+)?' >"$T/verbs"
missing=$(while read -r v; do grep -Eq "^\*$v\*" "$scd" || echo "$v"; done <"$T/verbs")
if [ "$(wc -l <"$T/verbs")" -ge 10 ] && [ -z "$missing" ]; then
	ok "vpmuctl.1.scd describes every command of vpmuctl --help ($(wc -l <"$T/verbs"))"
else
	fail "vpmuctl.1.scd lacks commands of vpmuctl --help: ${missing:-(none found in --help)}"
fi

# An option "appears" as a whole word: --pid must not be satisfied by
# --owner-pid's tail or --vm-fd by --vm.
opts_of() { grep -oE -- '(^|[^a-z-])--[a-z][a-z-]*' "$1" | grep -oE -- '--[a-z][a-z-]*' | sort -u; }
opts_of "$T/help" >"$T/ctl-opts"
opts_of "$scd" >"$T/ctl-scd-opts"
missing=$(comm -23 "$T/ctl-opts" "$T/ctl-scd-opts" | tr '\n' ' ')
extra=$(comm -13 "$T/ctl-opts" "$T/ctl-scd-opts" | grep -vx -- '--help' | tr '\n' ' ')
if [ "$(wc -l <"$T/ctl-opts")" -ge 15 ] && [ -z "$missing" ]; then
	ok "vpmuctl.1.scd describes every option of vpmuctl --help ($(wc -l <"$T/ctl-opts"))"
else
	fail "vpmuctl.1.scd lacks options of vpmuctl --help: ${missing:-(too few found in --help)}"
fi
if [ -z "$extra" ]; then
	ok "vpmuctl.1.scd describes no option vpmuctl does not take"
else
	fail "vpmuctl.1.scd describes options vpmuctl --help does not list: $extra"
fi

# ------------------------------------------------------------ drift: vpmud
scd=$S/docs/man/vpmud.8.scd
"$B/vpmud" --help >"$T/help"
opts_of "$T/help" >"$T/d-opts"
opts_of "$scd" >"$T/d-scd-opts"
missing=$(comm -23 "$T/d-opts" "$T/d-scd-opts" | tr '\n' ' ')
extra=$(comm -13 "$T/d-opts" "$T/d-scd-opts" | tr '\n' ' ')
# described as an entry, not merely mentioned
undefined=$(while read -r o; do grep -Eq -- "^\*(-h\*, \*)?$o\*" "$scd" || echo "$o"; done <"$T/d-opts" | tr '\n' ' ')
if [ "$(wc -l <"$T/d-opts")" -ge 15 ] && [ -z "$missing" ] && [ -z "$undefined" ]; then
	ok "vpmud.8.scd has an entry for every option of vpmud --help ($(wc -l <"$T/d-opts"))"
else
	fail "vpmud.8.scd lacks options of vpmud --help: ${missing}${undefined:+; no entry for: $undefined}"
fi
if [ -z "$extra" ]; then
	ok "vpmud.8.scd describes no option vpmud does not take"
else
	fail "vpmud.8.scd describes options vpmud --help does not list: $extra"
fi

# ------------------------------------------------------------ drift: config keys
grep -oE '!strcmp\(key, "[a-z_]+"' "$S/proto/config.c" | sed -E 's/.*"(.*)"/\1/' | sort -u >"$T/keys"
scd=$S/docs/man/vpmud.conf.5.scd
missing=$(while read -r k; do grep -Eq "^\*$k\* =" "$scd" || echo "$k"; done <"$T/keys" | tr '\n' ' ')
if [ "$(wc -l <"$T/keys")" -ge 10 ] && [ -z "$missing" ]; then
	ok "vpmud.conf.5.scd has an entry for every key config_set accepts ($(wc -l <"$T/keys"))"
else
	fail "vpmud.conf.5.scd has no entry for keys config_set accepts: ${missing:-(too few keys found in proto/config.c)}"
fi
missing=$(while read -r k; do grep -Fq "\`$k\`" "$S/docs/config.md" || echo "$k"; done <"$T/keys" | tr '\n' ' ')
if [ -z "$missing" ]; then
	ok "docs/config.md names every key config_set accepts"
else
	fail "docs/config.md does not name keys config_set accepts: $missing"
fi

# ------------------------------------------------------------ install
if DESTDIR=$T/stage cmake --install "$B" --prefix /usr >"$T/install.log" 2>&1; then
	missing=
	for p in $PAGES; do
		f=$T/stage/usr/share/man/man${p##*.}/$p
		cmp -s "$f" "$M/$p" || missing="$missing $p"
	done
	if [ -z "$missing" ]; then
		ok "cmake --install --prefix /usr: the pages in usr/share/man/man{1,5,8}"
	else
		fail "cmake --install --prefix /usr: not in usr/share/man/manN:$missing"
		find "$T/stage" -path '*man*' -type f | sed 's/^/  | /'
	fi
else
	fail "cmake --install into a DESTDIR failed"
	show "$T/install.log"
fi

[ "$failures" -eq 0 ] || { echo "$failures check(s) failed"; exit 1; }
echo "all man page checks passed"
