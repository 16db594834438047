#!/usr/bin/env bash
# The tree shows the layers and the build enforces them (docs/architecture.md):
# - each folder includes only its own layer and the layers below it, and a
#   door includes nothing of the core but broker/broker.h;
# - each layer's library links only layers below it; the arbiter links
#   nothing; the client library and the hook link proto and no daemon code;
# - the arbiter's archive needs no symbol any other project library defines;
# - a file's non-static functions carry the file's name.
set -euo pipefail
src=${VPMU_SOURCE_DIR:?} build=${VPMU_BUILD_DIR:?}
exec python3 - "$src" "$build" <<'PY'
import os, re, subprocess, sys
src, build = sys.argv[1], sys.argv[2]
fail = []

# 1. includes: folder -> include prefixes it may use ("x/" = a layer, or one header)
allowed = {
    'daemon/arbiter': ['arbiter/'],
    'daemon/base':    ['base/'],
    'proto':          ['proto/'],
    'daemon/pmu':     ['pmu/', 'proto/'],
    'daemon/perf':    ['perf/', 'pmu/', 'proto/'],
    'daemon/kvm':     ['kvm/', 'arbiter/', 'pmu/', 'proto/'],
    'daemon/broker':  ['broker/', 'kvm/', 'perf/', 'pmu/', 'arbiter/', 'base/', 'proto/'],
    'daemon/doors':   ['doors/', 'broker/broker.h', 'base/', 'proto/'],
    'client':         ['proto/', 'vpmu/', 'hook.h'],
}
# proto/cleanup.h is header-only and needs nothing but libc: every layer may use it.
for v in allowed.values():
    v.append('proto/cleanup.h')
inc = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)
for folder, ok in allowed.items():
    d = os.path.join(src, folder)
    for f in sorted(os.listdir(d)):
        if not f.endswith(('.c', '.h')):
            continue
        for m in inc.finditer(open(os.path.join(d, f)).read()):
            h = m.group(1)
            if not any(h == a or (a.endswith('/') and h.startswith(a)) for a in ok):
                fail.append(f'{folder}/{f} includes "{h}": {folder} may include only {", ".join(ok)}')

# 2. link interfaces as CMake resolved them
links = {}
for line in open(os.path.join(build, 'layers.links')):
    k, _, v = line.strip().partition('=')
    links[k] = [x for x in v.split(';') if x]
below = {
    'vpmu_arbiter': set(),
    'vpmu_base': set(),
    'vpmu_proto': set(),
    'vpmu_pmu': {'vpmu_proto'},
    'vpmu_perf': {'vpmu_pmu', 'vpmu_proto'},
    'vpmu_kvm': {'vpmu_arbiter', 'vpmu_pmu', 'vpmu_proto'},
    'vpmu_broker': {'vpmu_arbiter', 'vpmu_pmu', 'vpmu_perf', 'vpmu_kvm', 'vpmu_proto', 'vpmu_base'},
    'vpmu_doors': {'vpmu_broker', 'vpmu_proto', 'vpmu_base'},
    'vpmuclient': {'vpmu_proto'},
    'vpmuhook': {'vpmu_proto'},
    'vpmuctl': {'vpmuclient'},
    'vpmu-libvirt-hook': {'vpmuhook', 'vpmuclient'},
}
project = set(below) | {'vpmucore'}
for lib, ok in below.items():
    got = links.get(lib)
    if got is None:
        fail.append(f'{lib}: missing from layers.links')
        continue
    for dep in got:
        if dep in project and dep not in ok:
            fail.append(f'{lib} links {dep}: it may link only {sorted(ok) or "nothing of the project"}')
if links.get('vpmu_arbiter'):
    fail.append(f'vpmu_arbiter links {links["vpmu_arbiter"]}: the arbiter links nothing')

# 3. symbols: the arbiter's archive needs nothing another project library defines
def syms(archive, undefined):
    out = subprocess.run(['nm', '-g', '--format=posix'] + (['-u'] if undefined else ['--defined-only']) + [archive],
                         capture_output=True, text=True, check=True).stdout
    return {l.split()[0] for l in out.splitlines() if l and not l.endswith(':') and len(l.split()) >= 2}
arch = {n: os.path.join(build, f'lib{n}.a') for n in below if n.startswith('vpmu_')}
defined_elsewhere = set()
for n, a in arch.items():
    if n != 'vpmu_arbiter':
        defined_elsewhere |= syms(a, False)
need = syms(arch['vpmu_arbiter'], True)
bad = sorted(s for s in need if s in defined_elsewhere or re.match(r'(json_|sd_|vir|xml|perf_|pmu_|kvm_|broker_|proto_)', s))
if bad:
    fail.append(f'the arbiter needs symbols from other libraries: {bad[:10]}')

# 4. a file's functions carry its name (exceptions: the arbiter's arb_, the
#    public client API's vpmu_client_, entry points)
prefix_of = {'arbiter': 'arb_', 'client': 'vpmu_client_', 'log': 'log_', 'main': 'main', 'hook_main': 'main',
             'vpmuctl': 'main', 'fuzz_proto': 'LLVMFuzzer'}
for folder in ['daemon', 'daemon/arbiter', 'daemon/base', 'daemon/pmu', 'daemon/perf', 'daemon/kvm',
               'daemon/broker', 'daemon/doors', 'proto', 'client']:
    d = os.path.join(src, folder)
    for f in sorted(os.listdir(d)):
        if not f.endswith('.c'):
            continue
        base = f[:-2]
        want = prefix_of.get(base, base + '_')
        text = re.sub(r'/\*.*?\*/|//[^\n]*', '', open(os.path.join(d, f)).read(), flags=re.S)
        text = re.sub(r'^#[^\n]*', '', text, flags=re.M)
        text = re.sub(r'"(\\.|[^"\\\n])*"|\'(\\.|[^\'\\\n])*\'', '""', text)
        # only definitions at file scope: track brace depth
        pos, depth, starts = 0, 0, []
        for m in re.finditer(r'[{}]', text):
            if m.group() == '{':
                if depth == 0:
                    starts.append(m.start())
                depth += 1
            else:
                depth -= 1
        for st in starts:
            head_start = max(text.rfind(';', 0, st), text.rfind('}', 0, st)) + 1
            head = text[head_start:st]
            m = re.search(r'([A-Za-z_][A-Za-z0-9_]*)\s*\((?:[^()]|\([^()]*\))*\)\s*$', head)
            if not m or m.group(1) in ('if', 'for', 'while', 'switch') or re.search(r'\bstatic\b', head) or '=' in head[:m.start()]:
                continue
            name = m.group(1)
            if not (name.startswith(want) or name == want.rstrip('_')):
                fail.append(f'{folder}/{f}: function {name} does not carry the prefix {want}')

for f in fail:
    print('FAIL', f)
if fail:
    sys.exit(1)
print('layers: includes, links, symbols and function prefixes as docs/architecture.md says')
PY
