#!/usr/bin/env python3
"""The metrics file of the real vpmud (model PMU, model KVM), end to end.

vpmud writes its metrics file into a temporary textfile directory; the test
changes the plan with vpmuctl (VMs, sessions, a refusal, preemptions) and
checks after each change that the file follows (same generation as status),
that it equals `vpmuctl metrics`, that promtool finds no problem in it, and
that a real prometheus-node-exporter started here serves its samples with
their labels and no textfile scrape error. Then: the periodic rewrite, the
view of an unprivileged caller, and a write failure logged once.
Each check prints one line; any failure makes the exit status 1; 77 when
promtool or node_exporter is missing.
"""
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

BUILD = os.environ.get("VPMU_BUILD_DIR", os.path.join(os.path.dirname(__file__), "..", "build"))
VPMUD = os.path.join(BUILD, "vpmud")
VPMUCTL = os.path.join(BUILD, "client", "vpmuctl")
PROMTOOL = shutil.which("promtool")
NODE_EXPORTER = shutil.which("prometheus-node-exporter") or shutil.which("node_exporter")
failures = 0


def check(cond, what, detail=""):
    global failures
    print(("ok   " if cond else "FAIL ") + what + ("" if cond else f": {detail}"), flush=True)
    if not cond:
        failures += 1


def samples(text):
    """{(name, frozenset(labels)): value} of a Prometheus text exposition."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$', line)
        if not m:
            raise ValueError("not a sample line: " + line)
        labels = frozenset(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        out[(m.group(1), labels)] = float(m.group(3))
    return out


def value(s, name, **labels):
    return s.get((name, frozenset(labels.items())))


class Daemon:
    def __init__(self, tmp, conf):
        self.tmp = tmp
        self.sock = os.path.join(tmp, "vpmud-%d.sock" % id(self))
        self.conf = os.path.join(tmp, "vpmud-%d.conf" % id(self))
        with open(self.conf, "w") as f:
            f.write(conf)
        self.log = os.path.join(tmp, "vpmud-%d.log" % id(self))
        args = [VPMUD, "--pmu", "icelake-8360y", "--kvm", "model", "--dbus", "none", "--libvirt-uri", "none",
                "--socket", self.sock, "--state-dir", os.path.join(tmp, "state-%d" % id(self)),
                "--config", self.conf]
        self.p = subprocess.Popen(args, stderr=open(self.log, "wb"))
        deadline = time.time() + 10
        while time.time() < deadline:
            if os.path.exists(self.sock) and self.ctl("status").returncode == 0:
                return
            time.sleep(0.05)
        raise RuntimeError("vpmud did not come up; log in " + self.log)

    def ctl(self, *args, user=None):
        cmd = [VPMUCTL, "--socket", self.sock] + list(args)
        if user is not None:
            cmd = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups"] + cmd
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30)

    def ok(self, *args):
        r = self.ctl(*args)
        if r.returncode != 0:
            raise RuntimeError(f"vpmuctl {' '.join(args)}: {r.stderr}")
        return r.stdout

    def generation(self):
        out = self.ok("--json", "status")
        return int(re.search(r'"generation"\s*:\s*(\d+)', out).group(1))

    def logtext(self):
        with open(self.log, "rb") as f:
            return f.read().decode(errors="replace")

    def stop(self):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            self.p.wait(10)


def read(path):
    try:
        with open(path) as f:
            return f.read()
    except FileNotFoundError:
        return None


def wait_generation(path, gen, timeout=5):
    """The file's text once it shows plan generation gen."""
    deadline = time.time() + timeout
    text = None
    while time.time() < deadline:
        text = read(path)
        if text and value(samples(text), "vpmu_plan_generation") == gen:
            return text
        time.sleep(0.02)
    return text


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def scrape(port, timeout=10):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                return r.read().decode()
        except OSError as e:
            last = e
            time.sleep(0.1)
    raise RuntimeError(f"node_exporter on port {port} did not answer: {last}")


def promtool_check(text):
    r = subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True, text=True)
    return r.returncode, (r.stdout + r.stderr).strip()


def after_change(d, path, what):
    """The checks every change gets: the file follows, equals vpmuctl
    metrics, passes promtool. Returns its samples."""
    gen = d.generation()
    text = wait_generation(path, gen)
    check(text is not None and value(samples(text), "vpmu_plan_generation") == gen,
          f"{what}: the file shows generation {gen}", (text or "")[:200])
    ctl = d.ok("metrics")
    check(ctl == text, f"{what}: the file equals vpmuctl metrics")
    rc, out = promtool_check(text)
    check(rc == 0 and out == "", f"{what}: promtool check metrics finds no problem", out)
    leftovers = [n for n in os.listdir(os.path.dirname(path)) if n != os.path.basename(path)]
    check(leftovers == [], f"{what}: no temporary file left beside it", leftovers)
    return samples(text)


def main():
    if not PROMTOOL or not NODE_EXPORTER:
        print("SKIP: promtool or prometheus-node-exporter is not installed (Debian: prometheus, "
              "prometheus-node-exporter)")
        return 77
    tmp = tempfile.mkdtemp(prefix="vpmu-it-metrics.")
    os.chmod(tmp, 0o755)  # the unprivileged caller reaches the socket
    textdir = os.path.join(tmp, "textfile")
    path = os.path.join(textdir, "vpmu.prom")
    d = ne = bad = None
    try:
        # A long interval first: what the file shows after a change is the
        # change's own write, not a periodic one.
        d = Daemon(tmp, f"metrics_file = {path}\nmetrics_interval = 600\n")
        s = after_change(d, path, "at start")
        check(os.stat(textdir).st_mode & 0o7777 == 0o755, "the directory is created 0755",
              oct(os.stat(textdir).st_mode))
        check(os.stat(path).st_mode & 0o7777 == 0o644, "the file is 0644", oct(os.stat(path).st_mode))
        check(value(s, "vpmu_pmu_simulated") == 1 and value(s, "vpmu_kvm_simulated") == 1,
              "the model PMU and the model KVM are said to be simulated")
        check(read(path).endswith("# EOF\n"), "the file ends with # EOF")

        d.ok("vm", "attach", "batch", "--priority", "10", "--gp", "8", "--vcpus", "1", "--cpus", "1")
        s = after_change(d, path, "vm attach batch")
        check(value(s, "vpmu_vm_pmcs", vm="batch", route="passthrough") == 8, "batch: 8 PMCs pass through",
              value(s, "vpmu_vm_pmcs", vm="batch", route="passthrough"))
        check(value(s, "vpmu_cpu_counters", cpu="1", kind="gp", partition="guest") == 8,
              "cpu 1: 8 general counters in the guest partition")

        d.ok("session", "start", "sre", "--priority", "50", "--class", "guaranteed",
             "--events", "cpu/event=0x48,umask=0x01/,branches,task-clock", "--cpus", "1")
        s = after_change(d, path, "session start sre (preempts batch)")
        check(value(s, "vpmu_vm_pmcs", vm="batch", route="multiplexed") == 2,
              "batch: 2 PMCs multiplexed after the guaranteed session came")
        check(value(s, "vpmu_preemptions_total", lease="vm") == 1, "one VM preemption counted",
              value(s, "vpmu_preemptions_total", lease="vm"))
        check(value(s, "vpmu_session_events", session="sre", placement="dedicated") == 2,
              "sre: 2 dedicated events")
        check(value(s, "vpmu_session_events_not_counted", session="sre") == 2
              and ("vpmu_session_running_ratio", frozenset({("session", "sre")})) not in s,
              "sre: the model PMU counts no hardware event, and no ratio is shown as measured")

        r = d.ctl("vm", "attach", "gold", "--priority", "40", "--class", "guaranteed", "--gp", "8",
                  "--vcpus", "1", "--cpus", "1")
        check(r.returncode == 1 and "refused" in (r.stdout + r.stderr).lower(),
              "a guaranteed VM that would take a guaranteed session's counters is refused", r.stderr)
        # A refusal changes no plan, and the file still follows it at once
        # (the next periodic write is minutes away).
        t0 = time.time()
        while time.time() < t0 + 5:
            s = samples(read(path))
            if value(s, "vpmu_refusals_total", lease="vm", **{"class": "guaranteed"}) == 1:
                break
            time.sleep(0.02)
        check(value(s, "vpmu_refusals_total", lease="vm", **{"class": "guaranteed"}) == 1
              and time.time() - t0 < 1, "the refusal is counted in the file at once",
              f"{time.time() - t0:.2f} s")
        after_change(d, path, "after the refusal")

        d.ok("session", "start", "prof", "--priority", "100", "--events", "branches,cache-misses", "--cpus", "2")
        after_change(d, path, "session start prof")
        d.ok("vm", "attach", "hog", "--priority", "900", "--gp", "8", "--vcpus", "1", "--cpus", "2")
        s = after_change(d, path, "vm attach hog (preempts prof)")
        check(value(s, "vpmu_preemptions_total", lease="session") == 1, "one session preemption counted")
        check(value(s, "vpmu_session_events", session="prof", placement="multiplexed") == 2,
              "prof: its 2 events rotate")
        d.ok("vm", "attach", "late", "--priority", "5", "--gp", "8", "--vcpus", "1", "--cpus", "1")
        s = after_change(d, path, "vm attach late (falls back)")
        check(value(s, "vpmu_fallbacks_total", lease="vm", to="multiplexed") == 1,
              "a VM admitted with multiplexed PMCs is a fallback")

        # node_exporter's textfile collector reads the file as it is.
        port = free_port()
        ne = subprocess.Popen([NODE_EXPORTER, f"--web.listen-address=127.0.0.1:{port}",
                               f"--collector.textfile.directory={textdir}", "--collector.disable-defaults",
                               "--collector.textfile"], stdout=subprocess.DEVNULL,
                              stderr=open(os.path.join(tmp, "node_exporter.log"), "wb"))
        scraped = samples(scrape(port))
        check(value(scraped, "node_textfile_scrape_error") == 0, "node_exporter: node_textfile_scrape_error 0",
              value(scraped, "node_textfile_scrape_error"))
        check(value(scraped, "vpmu_vm_pmcs", vm="batch", route="multiplexed") == 2,
              "node_exporter serves vpmu_vm_pmcs with its labels")
        check(value(scraped, "vpmu_preemptions_total", lease="session") == 1,
              "node_exporter serves vpmu_preemptions_total")
        check(value(scraped, "vpmu_session_info", session="sre", scope="cpus", **{"class": "guaranteed"}) == 1,
              "node_exporter serves vpmu_session_info")
        check(value(scraped, "vpmu_cpu_counters", cpu="1", kind="gp", partition="host") == 2,
              "node_exporter serves vpmu_cpu_counters per CPU")
        ours = {k for k in samples(read(path)) if k[0].startswith("vpmu_")}
        missing = [k for k in ours if k not in scraped]
        check(not missing, "node_exporter serves every sample of the file", missing[:3])

        # Periodic rewrite without a change, at the interval a reload set.
        before = os.stat(path).st_mtime_ns
        time.sleep(1.5)
        check(os.stat(path).st_mtime_ns == before, "no rewrite before the interval")
        with open(d.conf, "w") as f:
            f.write(f"metrics_file = {path}\nmetrics_interval = 1\n")
        d.p.send_signal(signal.SIGHUP)
        time.sleep(0.5)
        before = os.stat(path).st_mtime_ns
        time.sleep(2.5)
        check(os.stat(path).st_mtime_ns != before, "after a reload to 1 s, the file is rewritten every second")
        check("applied metrics_interval" in d.logtext(), "the reload says it applied metrics_interval")

        # An unprivileged caller: sessions by name only.
        r = d.ctl("metrics", user=65534)
        check(r.returncode == 0, "anyone may call metrics", r.stderr)
        t = r.stdout
        check('vpmu_session_withheld{session="sre"} 1' in t and 'vpmu_session_events{session="sre"' not in t,
              "an unprivileged caller sees sre by name, without its events")
        check('vpmu_vm_pmcs{vm="batch",route="multiplexed"} 2' in t, "an unprivileged caller sees the VMs")
        rc, out = promtool_check(t)
        check(rc == 0 and out == "", "its text passes promtool too", out)

        # docs/metrics.md lists every family either text has.
        src = os.environ.get("VPMU_SOURCE_DIR", os.path.join(os.path.dirname(__file__), ".."))
        with open(os.path.join(src, "docs", "metrics.md")) as f:
            doc = f.read()
        names = set(re.findall(r"^# TYPE (\S+) ", read(path) + t, re.M))
        undocumented = sorted(n for n in names if f"| `{n}` |" not in doc)
        check(len(names) > 15 and not undocumented, "docs/metrics.md lists every metric", undocumented)

        # Stopping leases: gauges go, counters stay.
        d.ok("vm", "detach", "hog")
        d.ok("session", "stop", "sre")
        s = after_change(d, path, "detach hog, stop sre")
        check(("vpmu_vm_info", frozenset({("vm", "hog"), ("class", "preferred"), ("routes", "advisory")})) not in s,
              "a detached VM leaves the file")
        check(value(s, "vpmu_preemptions_total", lease="session") == 1
              and value(s, "vpmu_preemptions_total", lease="vm") == 1, "counters do not go back")

        # Bad settings stop vpmud at start, naming the key.
        for conf, key in (("metrics_file = vpmu.prom\n", "metrics_file"),
                          ("metrics_file = /run/x/\n", "metrics_file"),
                          ("metrics_interval = -1\n", "metrics_interval"),
                          ("metrics_interval = 15s\n", "metrics_interval")):
            cp = os.path.join(tmp, "bad.conf")
            with open(cp, "w") as f:
                f.write(conf)
            r = subprocess.run([VPMUD, "--pmu", "icelake-8360y", "--kvm", "model", "--dbus", "none",
                                "--libvirt-uri", "none", "--socket", os.path.join(tmp, "bad.sock"),
                                "--state-dir", os.path.join(tmp, "bad-state"), "--config", cp],
                               capture_output=True, text=True, timeout=10)
            check(r.returncode == 2 and f'"{key}"' in r.stderr, f"{conf.strip()!r} is refused at start, naming {key}",
                  r.stderr)

        # A file that cannot be written: logged once, nothing else hurt.
        bad = Daemon(tmp, "metrics_file = /nonexistent-vpmu-it/metrics/vpmu.prom\nmetrics_interval = 1\n")
        time.sleep(2.5)
        lines = [l for l in bad.logtext().splitlines() if "metrics:" in l and "failed" in l]
        check(len(lines) == 1, "a failing write is logged once, not per attempt", lines)
        check(bad.p.poll() is None, "vpmud keeps running when the metrics file cannot be written")
    finally:
        if ne:
            ne.terminate()
            ne.wait(10)
        for x in (bad, d):
            if x:
                x.stop()
        if failures:
            print("logs kept in " + tmp)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
