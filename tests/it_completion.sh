#!/usr/bin/env bash
# vpmuctl's bash completion (completion/vpmuctl), driven as bash drives it:
# bash-completion and the script sourced, COMP_WORDS/COMP_CWORD/COMP_LINE/
# COMP_POINT set, _vpmuctl called, COMPREPLY checked. Commands, sub-commands,
# each command's options against 'vpmuctl --help', option values, and the
# live VM and session names of a vpmud this test starts (model PMU, model
# KVM, two VMs, one session), asked on the socket the line names. Also where
# cmake --install puts the script.
# Each check prints "ok" or "FAIL"; any FAIL exits 1.
set -u

S=${VPMU_SOURCE_DIR:-$(dirname "$0")/..}
B=${VPMU_BUILD_DIR:-$S/build}
S=$(cd "$S" && pwd) || exit 1
B=$(cd "$B" && pwd) || exit 1
VPMUD=$B/vpmud
CTL=$B/client/vpmuctl
BASHCOMP=/usr/share/bash-completion/bash_completion
for f in "$VPMUD" "$CTL"; do
	[ -x "$f" ] || { echo "skip: $f not built"; exit 77; }
done
[ -r "$BASHCOMP" ] || { echo "skip: $BASHCOMP missing (Debian: bash-completion)"; exit 77; }

T=$(mktemp -d /tmp/vpmu-it-comp.XXXXXX)
SOCK=$T/vpmud.sock
daemon=
failures=0
cleanup() {
	if [ -n "$daemon" ] && kill -0 "$daemon" 2>/dev/null; then
		kill -TERM "$daemon"
		wait "$daemon" 2>/dev/null
	fi
	if [ "$failures" -eq 0 ]; then
		rm -rf "$T"
	else
		echo "daemon log kept in $T"
	fi
}
trap cleanup EXIT
trap 'exit 1' INT TERM

ok() { echo "ok   $*"; }
fail() {
	echo "FAIL $*"
	failures=$((failures + 1))
}

# bash-completion expects an interactive shell's settings
# shellcheck disable=SC1090
source "$BASHCOMP" || { echo "FAIL cannot source $BASHCOMP"; exit 1; }
# shellcheck disable=SC1091
source "$S/completion/vpmuctl" || { echo "FAIL cannot source completion/vpmuctl"; exit 1; }

# complete LINE: what bash would offer at the end of LINE, sorted, one per
# line in $T/reply. The line is split as bash splits it for completion:
# at blanks, and '=' is a word of its own (COMP_WORDBREAKS).
complete_line() {
	local line=$1 w
	local -a split=()
	read -ra split <<<"$line"
	COMP_WORDS=()
	for w in "${split[@]}"; do
		while [[ $w == *=* ]]; do
			[ -n "${w%%=*}" ] && COMP_WORDS+=("${w%%=*}")
			COMP_WORDS+=("=")
			w=${w#*=}
		done
		[ -n "$w" ] && COMP_WORDS+=("$w")
	done
	[[ $line == *[\ =] ]] && COMP_WORDS+=("")
	COMP_CWORD=$((${#COMP_WORDS[@]} - 1))
	COMP_LINE=$line
	COMP_POINT=${#line}
	COMPREPLY=()
	_vpmuctl vpmuctl "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD - 1]}"
	printf '%s\n' "${COMPREPLY[@]}" | sed '/^$/d' | sort >"$T/reply"
}
words() { tr ' ' '\n' <<<"$*" | sed '/^$/d' | sort; }
# expect DESCRIPTION LINE WORDS: exactly WORDS are offered
expect() {
	complete_line "$2"
	if words "$3" | cmp -s - "$T/reply"; then
		ok "$1"
	else
		fail "$1: [$2] offered [$(tr '\n' ' ' <"$T/reply")], expected [$3]"
	fi
}
# offers DESCRIPTION LINE WORDS: WORDS are among those offered
offers() {
	complete_line "$2"
	local missing
	missing=$(words "$3" | comm -23 - "$T/reply" | tr '\n' ' ')
	if [ -z "$missing" ]; then
		ok "$1"
	else
		fail "$1: [$2] offered [$(tr '\n' ' ' <"$T/reply")], missing [$missing]"
	fi
}

GLOBALS="--socket --json --timeout --help"

# ------------------------------------------------------------ registration
if complete -p vpmuctl 2>/dev/null | grep -q -- '-F _vpmuctl vpmuctl'; then
	ok "the script registers _vpmuctl for vpmuctl"
else
	fail "the script does not register _vpmuctl for vpmuctl: $(complete -p vpmuctl 2>&1)"
fi

# ------------------------------------------------------------ commands and options
offers "first word: the commands" "$CTL " "status pmu plan vm session watch"
expect "first word 'v': vm" "$CTL v" "vm"
expect "first word '-': the global options" "$CTL -" "$GLOBALS"
expect "vm: its sub-commands" "$CTL vm " "attach update bind detach list show"
expect "session st: start, stop" "$CTL session st" "start stop"
expect "after a global option with its value, still the commands' sub-commands" \
	"$CTL --timeout 5 --json session " "start read stop list"
expect "vm attach: its options and the global ones" "$CTL vm attach web --" \
	"--priority --class --gp --fixed --vcpus --cpus --vcpu-cpus --pid --vm-fd $GLOBALS"
expect "vm bind: options already given are not offered again" "$CTL --json vm bind web --pid 1 --" \
	"--vm-fd --route-fd --socket --timeout --help"
expect "session start --class: the classes" "$CTL session start s --class " "guaranteed preferred shared"
expect "session start --class=g: guaranteed" "$CTL session start s --class=g" "guaranteed"
expect "session start --priority: a number, nothing to offer" "$CTL session start s --priority " ""
expect "plan: --cpus and the global options" "$CTL plan --" "--cpus $GLOBALS"
expect "status: nothing but the global options" "$CTL status --" "$GLOBALS"
expect "an unknown command: nothing" "$CTL frobnicate --" ""
complete_line "$CTL session start s --pid "
if grep -qx "$$" "$T/reply"; then
	ok "session start --pid: process ids, this shell's among them"
else
	fail "session start --pid: this shell's pid $$ not offered"
fi
complete_line "$CTL --socket $T/"
if [ -s "$T/reply" ] && grep -q "^$T/" "$T/reply"; then
	ok "--socket: paths"
else
	fail "--socket $T/: no paths offered: [$(tr '\n' ' ' <"$T/reply")]"
fi

# ------------------------------------------------------------ drift against vpmuctl --help
# Each entry of --help: a line "  vm attach NAME [--priority P] ..." and
# its continuation lines (more indented); the options are its --words.
"$CTL" --help >"$T/help"
awk '
	/^  [a-z]/ { if (entry != "") print entry; entry = substr($0, 3); next }
	/^   +[^ ]/ && entry != "" { entry = entry " " $0; next }
	{ if (entry != "") print entry; entry = "" }
	END { if (entry != "") print entry }
' "$T/help" >"$T/entries"
n=0
while IFS= read -r entry; do
	verb=$(sed -E 's/  .*//' <<<"$entry" | grep -oE '^[a-z]+( [a-z]+)?')
	[ -n "$verb" ] || continue
	n=$((n + 1))
	first=${verb%% *}
	complete_line "$CTL ${first:0:2}"
	grep -qx "$first" "$T/reply" || fail "'${first:0:2}' does not complete to '$first' (vpmuctl --help: $verb)"
	if [ "$verb" != "$first" ]; then
		complete_line "$CTL $first ${verb#* }"
		grep -qx "${verb#* }" "$T/reply" || fail "'$first' does not complete to '$verb'"
	fi
	grep -oE -- '--[a-z][a-z-]*' <<<"$entry" | sort -u >"$T/want"
	words "$GLOBALS" >"$T/globals"
	complete_line "$CTL $verb --"
	comm -23 "$T/reply" "$T/globals" >"$T/got"
	if ! cmp -s "$T/want" "$T/got"; then
		fail "$verb: completion offers [$(tr '\n' ' ' <"$T/got")], vpmuctl --help lists [$(tr '\n' ' ' <"$T/want")]"
	fi
done <"$T/entries"
if [ "$n" -ge 10 ]; then
	ok "every command of vpmuctl --help ($n) completes, with exactly its options"
else
	fail "only $n commands found in vpmuctl --help"
fi

# ------------------------------------------------------------ live names
: >"$T/vpmud.conf"
"$VPMUD" --pmu icelake-8360y --kvm model --dbus none --libvirt-uri none --socket "$SOCK" \
	--state-dir "$T/state" --config "$T/vpmud.conf" 2>"$T/vpmud.log" &
daemon=$!
for _ in $(seq 200); do
	"$CTL" --socket "$SOCK" status >/dev/null 2>&1 && break
	sleep 0.05
done
if ! "$CTL" --socket "$SOCK" status >/dev/null 2>&1; then
	echo "FAIL vpmud did not come up:"
	cat "$T/vpmud.log"
	failures=1
	exit 1
fi
ok "vpmud is up (pid $daemon)"
if ! "$CTL" --socket "$SOCK" vm attach web --vcpus 2 --cpus 0-3 >/dev/null ||
	! "$CTL" --socket "$SOCK" vm attach db-1 --gp 2 --vcpus 1 --cpus 4 >/dev/null ||
	! "$CTL" --socket "$SOCK" session start prof --events task-clock --cpus 0-1 --owner-pid $$ >/dev/null; then
	echo "FAIL could not attach the VMs and start the session"
	failures=1
	exit 1
fi

export VPMU_SOCKET=$SOCK
expect "vm show: the VMs vpmud holds" "$CTL vm show " "web db-1"
expect "vm detach w: web" "$CTL vm detach w" "web"
expect "vm bind: the VMs" "$CTL vm bind " "web db-1"
expect "vm update: the VMs" "$CTL vm update " "web db-1"
expect "vm show web: one name only" "$CTL vm show web " ""
expect "vm attach: a new name, nothing to offer" "$CTL vm attach " ""
expect "session stop: the sessions" "$CTL session stop " "prof"
expect "session read, after an option and its value: the sessions" "$CTL session read --interval 100 " "prof"
expect "vm show, global options before and between: the VMs" "$CTL --json vm --timeout 5 show " "web db-1"

export VPMU_SOCKET=$T/nobody-here.sock
expect "\$VPMU_SOCKET names no vpmud: no names" "$CTL vm show " ""
expect "--socket PATH earlier on the line: its vpmud's VMs" "$CTL --socket $SOCK vm show " "web db-1"
expect "--socket=PATH earlier on the line: its vpmud's sessions" "$CTL --socket=$SOCK session stop " "prof"
expect "--socket after the command: its vpmud's VMs" "$CTL vm show --socket $SOCK " "web db-1"
export VPMU_SOCKET=$SOCK
expect "--socket naming no vpmud overrides \$VPMU_SOCKET: no names" "$CTL --socket $T/nobody-here.sock vm show " ""

"$CTL" --socket "$SOCK" vm detach db-1 >/dev/null
expect "names are live: a detached VM is gone" "$CTL vm show " "web"

kill -STOP "$daemon"
start=$(date +%s%N)
complete_line "$CTL vm show "
elapsed_ms=$((($(date +%s%N) - start) / 1000000))
kill -CONT "$daemon"
if [ ! -s "$T/reply" ] && [ "$elapsed_ms" -lt 3000 ]; then
	ok "a vpmud that does not answer: no names, within ${elapsed_ms} ms"
else
	fail "a stopped vpmud: offered [$(tr '\n' ' ' <"$T/reply")] after ${elapsed_ms} ms"
fi

# ------------------------------------------------------------ install
dir=$(pkg-config --variable=completionsdir bash-completion 2>/dev/null)
prefix=$(pkg-config --variable=prefix bash-completion 2>/dev/null)
if [ -n "$dir" ] && [ -n "$prefix" ] && [[ $dir == "$prefix"/* ]]; then
	for p in /usr /opt/vpmu; do
		want=$T/stage$p/${dir#"$prefix"/}/vpmuctl
		if DESTDIR=$T/stage cmake --install "$B" --prefix "$p" >"$T/install.log" 2>&1 &&
			cmp -s "$want" "$S/completion/vpmuctl"; then
			ok "cmake --install --prefix $p: $p/${dir#"$prefix"/}/vpmuctl"
		else
			fail "cmake --install --prefix $p: no $want"
			sed 's/^/  | /' "$T/install.log"
		fi
		rm -rf "$T/stage"
	done
else
	echo "note: bash-completion's completionsdir ($dir) is not under its prefix ($prefix): install path not checked"
fi

[ "$failures" -eq 0 ] || { echo "$failures check(s) failed"; exit 1; }
echo "all completion checks passed"
