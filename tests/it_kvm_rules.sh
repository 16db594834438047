#!/bin/sh
# The rule table of docs/kvm-api.md against the code: every rule P1..P11,
# K1..K18 has a row; the row's model check is a function of
# daemon/kvm/kvm_model.c whose body (or the comment just above it) names
# the rule; each test it names is a cmocka test of tests/test_kvm_model.c
# that is registered to run and starts with the rule id. A rule without
# both is not done (issue 13).
set -eu
src=${1:-$(cd "$(dirname "$0")/.." && pwd)}
doc=$src/docs/kvm-api.md
model=$src/daemon/kvm/kvm_model.c
tests=$src/tests/test_kvm_model.c
fail=0
bad() { echo "it_kvm_rules: $*" >&2; fail=1; }

for f in "$doc" "$model" "$tests"; do
	[ -r "$f" ] || { echo "it_kvm_rules: $f missing" >&2; exit 1; }
done

ids=""
i=1; while [ $i -le 11 ]; do ids="$ids P$i"; i=$((i + 1)); done
i=1; while [ $i -le 18 ]; do ids="$ids K$i"; i=$((i + 1)); done

for id in $ids; do
	row=$(grep -E "^\| *$id *\|" "$doc" || true)
	if [ -z "$row" ]; then
		bad "$id: no row in the rule table of docs/kvm-api.md"
		continue
	fi
	if [ "$(printf '%s\n' "$row" | wc -l)" -ne 1 ]; then
		bad "$id: more than one row"
		continue
	fi
	check=$(printf '%s\n' "$row" | awk -F'|' '{print $5}' | grep -o '`[a-z_0-9]*`' | tr -d '`' || true)
	tnames=$(printf '%s\n' "$row" | awk -F'|' '{print $6}' | grep -o '`[a-z_0-9]*`' | tr -d '`' || true)
	[ -n "$check" ] || bad "$id: no model check named"
	[ -n "$tnames" ] || bad "$id: no test named"
	# The rule is cited at its check in the model's source.
	grep -q "/\* $id:" "$model" || bad "$id: kvm_model.c has no '/* $id:' comment at its check"
	for fn in $check; do
		grep -Eq "^((static )?[a-z].*[ *])?$fn\(" "$model" || bad "$id: model check $fn is not a function of kvm_model.c"
	done
	lid=$(printf '%s' "$id" | tr 'PK' 'pk')
	for t in $tnames; do
		case $t in
		"${lid}"_*|rule_"${lid}"_*) ;;
		*) bad "$id: test $t does not start with rule_${lid}_" ;;
		esac
		grep -Eq "^static void $t\(" "$tests" || bad "$id: test $t is not defined in test_kvm_model.c"
		# registered: named as an argument (cmocka_unit_test*(t) or a
		# wrapper macro of it) besides its definition
		grep -Ev "^static void $t\(" "$tests" | grep -Eq "\($t[,)]" || bad "$id: test $t is not registered to run"
	done
done
rows=$(grep -cE '^\| *[PK][0-9]+ *\|' "$doc" || true)
[ "$rows" -eq 29 ] || bad "the table has $rows rule rows, expected 29 (P1..P11, K1..K18)"
[ $fail -eq 0 ] && echo "it_kvm_rules: 29 rules, each with a model check and a registered test"
exit $fail
