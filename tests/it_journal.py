#!/usr/bin/env python3
"""vpmud's journal fields, received over the journal's native protocol.

There is no journald here: the test binds /run/systemd/journal/socket itself
(libsystemd 252 has no variable to move it) and parses what sd-journal sends
(systemd's "Native Journal Protocol": KEY=VALUE lines, or KEY, a little-endian
64-bit size and the raw value for values with newlines; a datagram too large
arrives as a sealed memfd passed with SCM_RIGHTS). Datagrams are matched to
vpmud by the sender's pid (SO_PASSCRED).

vpmud takes the native protocol only when JOURNAL_STREAM names its stderr;
then the events an operator searches for carry MESSAGE_ID and VPMU_* fields.
Without JOURNAL_STREAM, with one naming another stream, or with no journal
listening, the stderr lines are today's. systemd/vpmu.catalog is compiled
with journalctl --update-catalog into a scratch root and must list every id.

Exit status 77 (skipped) when the socket path is taken (a real journald) or
cannot be created (not root).
"""
import array
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import it_daemon  # noqa: E402  (Client, Daemon: vpmud on a private socket)
from it_daemon import Client, Daemon, attach_params  # noqa: E402

SOURCE = os.environ.get("VPMU_SOURCE_DIR", os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
VPMUCTL = it_daemon.VPMUCTL
SOCKET = "/run/systemd/journal/socket"
failures = 0


def check(cond, what, detail=""):
    global failures
    print(("ok   " if cond else "FAIL ") + what + ("" if cond else f": {detail}"), flush=True)
    if not cond:
        failures += 1


def message_ids():
    """name -> MESSAGE_ID, from daemon/base/log.c's table."""
    text = open(os.path.join(SOURCE, "daemon", "base", "log.c")).read()
    ids = dict((name, mid) for mid, name in re.findall(r'\{ "([0-9a-f]{32})", "([a-z-]+)" \}', text))
    assert len(ids) >= 5, ids
    return ids


def parse_native(data):
    """The fields of one native-protocol entry: key -> list of values."""
    fields, i = {}, 0
    while i < len(data):
        nl = data.index(b"\n", i)
        line = data[i:nl]
        if b"=" in line:
            key, value = line.split(b"=", 1)
            i = nl + 1
        else:
            key = line
            (size,) = struct.unpack_from("<Q", data, nl + 1)
            start = nl + 9
            value = data[start:start + size]
            if data[start + size:start + size + 1] != b"\n":
                raise ValueError(f"binary field {key!r} not closed by a newline")
            i = start + size + 1
        fields.setdefault(key.decode(), []).append(value.decode(errors="replace"))
    return fields


class Journal:
    """A stand-in journald: the socket, and the entries it received."""

    def __init__(self):
        self.made = []
        d = os.path.dirname(SOCKET)
        for p in ("/run/systemd", d):
            if not os.path.isdir(p):
                os.mkdir(p, 0o755)
                self.made.append(p)
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.s.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.s.bind(SOCKET)
        self.entries = []   # (pid, fields)
        self.errors = []
        self.lock = threading.Lock()
        self.stopped = False
        self.t = threading.Thread(target=self.run, daemon=True)
        self.t.start()

    def run(self):
        cmsg_space = socket.CMSG_SPACE(struct.calcsize("3i")) + socket.CMSG_SPACE(4 * 4)
        while not self.stopped:
            try:
                data, anc, _, _ = self.s.recvmsg(1 << 20, cmsg_space)
            except OSError:
                return
            pid, fds = None, []
            for level, kind, payload in anc:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                    pid = struct.unpack("3i", payload[:12])[0]
                elif level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    fds.extend(array.array("i", payload[:len(payload) - len(payload) % 4]))
            try:
                for fd in fds:
                    # a large entry: the whole datagram is in the memfd
                    with os.fdopen(fd, "rb") as f:
                        data = f.read()
                if data:
                    with self.lock:
                        self.entries.append((pid, parse_native(data)))
            except (ValueError, struct.error) as e:
                with self.lock:
                    self.errors.append(f"{e}: {data[:200]!r}")

    def of(self, pid):
        with self.lock:
            return [f for p, f in self.entries if p == pid]

    def close(self):
        self.stopped = True
        self.s.close()
        try:
            os.unlink(SOCKET)
        except FileNotFoundError:
            pass
        for p in reversed(self.made):
            os.rmdir(p)


def one(fields, key):
    v = fields.get(key)
    return v[0] if v and len(v) == 1 else None


def stream_of(path):
    st = os.stat(path)
    return f"{st.st_dev}:{st.st_ino}"


def wait_for(pred, timeout=5.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pred():
            return True
        time.sleep(0.02)
    return pred()


def ctl(d, *args):
    return subprocess.run([VPMUCTL, "--socket", d.sock, *args], capture_output=True, text=True, timeout=30)


def scenario(d, restart=True):
    """attach (vpmuctl), preempt, refuse, release; restart to restore; stop
    the restored session; reload. Returns the pids vpmud ran as."""
    pids = [d.p.pid]
    r = ctl(d, "vm", "attach", "batch", "--priority", "10", "--class", "preferred", "--gp", "8",
            "--vcpus", "1", "--cpus", "1")
    check(r.returncode == 0, "vpmuctl vm attach batch", r.stderr)
    c = Client(d.sock)
    r = c.call("session.start", {"name": "sre", "events": ["branches", "branch-misses"], "cpus": "1",
                                 "priority": 50, "class": "guaranteed", "owner_pid": os.getpid()})
    check("result" in r, "a guaranteed session takes two of batch's PMCs", r)
    r = c.call("vm.attach", attach_params("gold", gp=8, cpus="1", priority=1, **{"class": "guaranteed"}))
    check(r.get("error", {}).get("code") == "refused", "guaranteed vm gold is refused", r)
    r = c.call("vm.detach", {"name": "batch"})
    check("result" in r, "vm.detach batch", r)
    c.close()
    if not restart:
        return pids
    d.stop()
    d.start()
    pids.append(d.p.pid)
    c = Client(d.sock)
    r = c.call("session.stop", {"name": "sre"})
    check("result" in r, "the restored session stops", r)
    c.close()
    d.p.send_signal(signal.SIGHUP)
    wait_for(lambda: "config reloaded" in d.logtext(), 2)
    return pids


def test_journal(tmp, journal, ids):
    d = Daemon(tmp)
    env = dict(os.environ, JOURNAL_STREAM=stream_of(d.log.name))
    d.env = env
    d.start()
    pids = scenario(d)
    # the reload's entry is the last one asked for
    wait_for(lambda: any(one(f, "MESSAGE_ID") == ids["config-reloaded"] for f in journal.of(pids[1])))
    d.stop()
    wait_for(lambda: any(one(f, "MESSAGE", ) == "vpmud stopped" for f in journal.of(pids[1])))
    first, second = journal.of(pids[0]), journal.of(pids[1])
    entries = first + second
    check(not journal.errors, "every datagram parses as the native protocol", journal.errors[:3])
    check(len(first) > 5 and len(second) > 5, "both runs of vpmud logged through the journal socket",
          (len(first), len(second)))
    check(all(one(f, "SYSLOG_IDENTIFIER") == "vpmud" and (one(f, "PRIORITY") or "").isdigit()
              and one(f, "MESSAGE") for f in entries),
          "every entry has MESSAGE, PRIORITY and SYSLOG_IDENTIFIER=vpmud",
          [f for f in entries if one(f, "SYSLOG_IDENTIFIER") != "vpmud"][:2])
    check(all((one(f, "CODE_FILE") or "").endswith(".c") and (one(f, "CODE_LINE") or "").isdigit()
              and one(f, "CODE_FUNC") for f in entries), "every entry has CODE_FILE, CODE_LINE, CODE_FUNC",
          [f for f in entries if not (one(f, "CODE_FILE") or "").endswith(".c")][:2])
    suffixed = [one(f, "MESSAGE") for f in entries
                if re.search(r" (vm|session|uid|via)=\S+$", one(f, "MESSAGE") or "")]
    check(not suffixed, "no MESSAGE carries the stderr key=value suffixes (they are fields)", suffixed[:3])
    stderr = d.logtext()
    check(not re.search(r"attached|refused|released|restored", stderr),
          "nothing about leases went to stderr while the journal listened", stderr[:500])

    def by_id(name, within=entries):
        return [f for f in within if one(f, "MESSAGE_ID") == ids[name]]

    adm = by_id("admitted")
    vm_adm = [f for f in adm if one(f, "VPMU_VM") == "batch"]
    check(len(vm_adm) == 1 and one(vm_adm[0], "VPMU_ORIGIN") == "vpmuctl" and one(vm_adm[0], "VPMU_UID") == "0"
          and one(vm_adm[0], "VPMU_DOOR") == "socket" and one(vm_adm[0], "VPMU_GENERATION") == "1"
          and one(vm_adm[0], "PRIORITY") == "5"
          and one(vm_adm[0], "MESSAGE").startswith("vm batch attached: priority 10, class preferred"),
          "admitted: VPMU_VM=batch, VPMU_ORIGIN=vpmuctl, VPMU_UID, VPMU_DOOR, VPMU_GENERATION=1", vm_adm)
    s_adm = [f for f in adm if one(f, "VPMU_SESSION") == "sre"]
    check(len(s_adm) == 1 and one(s_adm[0], "VPMU_ORIGIN") == "it_daemon"
          and one(s_adm[0], "VPMU_GENERATION") == "2" and "VPMU_VM" not in s_adm[0],
          "admitted: VPMU_SESSION=sre from its client, generation 2", s_adm)
    check(not by_id("admitted", second), "a restore replays leases without new admitted entries",
          by_id("admitted", second))
    pre = by_id("preempted")
    check(len(pre) == 1 and one(pre[0], "VPMU_VM") == "batch" and one(pre[0], "VPMU_SESSION") == "sre"
          and one(pre[0], "VPMU_GENERATION") == "2" and "session.start sre" in one(pre[0], "MESSAGE"),
          "preempted: VPMU_VM=batch by VPMU_SESSION=sre at generation 2", pre)
    ref = by_id("refused")
    check(len(ref) == 1 and one(ref[0], "VPMU_VM") == "gold" and one(ref[0], "PRIORITY") == "4"
          and one(ref[0], "VPMU_ORIGIN") == "it_daemon" and one(ref[0], "VPMU_DOOR") == "socket"
          and "held by guaranteed session 'sre'" in one(ref[0], "MESSAGE")
          and "VPMU_GENERATION" not in ref[0],
          "refused: VPMU_VM=gold, the holder named, no generation (nothing changed)", ref)
    rel = by_id("released")
    rel_vm = [f for f in rel if one(f, "VPMU_VM") == "batch"]
    rel_s = [f for f in rel if one(f, "VPMU_SESSION") == "sre"]
    check(len(rel_vm) == 1 and one(rel_vm[0], "VPMU_GENERATION") == "3"
          and "detached by uid 0 via socket" in one(rel_vm[0], "MESSAGE"),
          "released: VPMU_VM=batch, its generation, the reason in MESSAGE", rel_vm)
    check(len(rel_s) == 1 and rel_s[0] in second, "released: the restored session sre when stopped", rel_s)
    res = by_id("restored", second)
    check(len(res) == 1 and one(res[0], "VPMU_SESSION") == "sre" and one(res[0], "VPMU_ORIGIN") == "restore"
          and one(res[0], "VPMU_GENERATION") == "1",
          "restored: VPMU_SESSION=sre, VPMU_ORIGIN=restore after the restart", res)
    plans = by_id("plan-applied")
    gens = [one(f, "VPMU_GENERATION") for f in plans]
    check(gens[:2] == ["1", "2"] and all(g and g.isdigit() for g in gens),
          "plan applied: one entry per generation, with VPMU_GENERATION", gens)
    check(len(by_id("ready")) == 2 and len(by_id("config-reloaded")) == 1, "ready (each start) and config reloaded",
          (len(by_id("ready")), len(by_id("config-reloaded"))))
    vm_history = [one(f, "MESSAGE") for f in entries if one(f, "VPMU_VM") == "batch"]
    check(len(vm_history) >= 3, "VPMU_VM=batch finds the VM's history (admitted, preempted, released)",
          vm_history)


# The lines of scenario(restart=False) as vpmud wrote them before the
# journal work (the attach is vpmuctl's, the rest it_daemon's client).
EXPECTED_STDERR = [
    "<5>vm batch attached: priority 10, class preferred, 1 vCPUs, gp 8, fixed 0x0, not bound to a VMM yet "
    "vm=batch uid=0 via=socket",
    "<6>vm.attach batch: generation 1, 2 transitions",
    "<6>session.start sre: generation 2, 2 transitions",
    "<5>vm batch released: detached by uid 0 via socket vm=batch",
]


def test_stderr(tmp, journal, stream, what):
    d = Daemon(tmp)
    env = dict(os.environ)
    env.pop("JOURNAL_STREAM", None)
    if stream is not None:
        env["JOURNAL_STREAM"] = stream(d.log.name)
    d.env = env
    d.start()
    pid = d.p.pid
    scenario(d, restart=False)
    d.stop()
    lines = d.logtext().splitlines()
    missing = [l for l in EXPECTED_STDERR if l not in lines]
    check(not missing, f"{what}: today's stderr lines", missing)
    check(any(re.match(r"<5>session sre started: 2 events \(2 on hardware counters\), cpus 1, owner pid \d+ "
                       r"session=sre uid=0$", l) for l in lines), f"{what}: the session line as before", lines)
    check(any(l.startswith("<4>vm gold refused: guaranteed vm 'gold'") and l.endswith(" vm=gold uid=0 via=socket")
              for l in lines), f"{what}: the refusal on stderr with its suffixes", lines)
    check(any(l.startswith("<5>vm batch preempted by session.start sre: ") and l.endswith(" vm=batch session=sre")
              for l in lines), f"{what}: the preemption on stderr with its suffixes", lines)
    if journal:
        time.sleep(0.2)
        check(not journal.of(pid), f"{what}: nothing sent to the journal socket", journal.of(pid)[:2])


def test_catalog(tmp, ids):
    root = os.path.join(tmp, "root")
    cat = os.path.join(root, "usr", "lib", "systemd", "catalog")
    os.makedirs(cat)
    os.makedirs(os.path.join(root, "var", "lib", "systemd", "catalog"))
    shutil.copy(os.path.join(SOURCE, "systemd", "vpmu.catalog"), cat)
    r = subprocess.run(["journalctl", f"--root={root}", "--update-catalog"], capture_output=True, text=True)
    check(r.returncode == 0 and not r.stderr.strip(), "journalctl --update-catalog takes vpmu.catalog silently",
          (r.returncode, r.stderr))
    r = subprocess.run(["journalctl", f"--root={root}", "--list-catalog"], capture_output=True, text=True)
    listed = dict(l.split(" ", 1) for l in r.stdout.splitlines() if " " in l)
    missing = [n for n, i in ids.items() if not listed.get(i, "").startswith("vpmu: ")]
    check(r.returncode == 0 and not missing and len(listed) == len(ids),
          f"--list-catalog has every MESSAGE_ID ({len(ids)}), defined by vpmu", (missing, r.stdout))


def main():
    if not os.path.exists(it_daemon.VPMUD):
        print("skip: vpmud not built")
        return 77
    ids = message_ids()
    if shutil.which("journalctl"):
        with tempfile.TemporaryDirectory(prefix="vpmu-it-journal-") as tmp:
            test_catalog(tmp, ids)
    else:
        print("note: no journalctl; the catalog is parse-checked by test_log only")
    if os.path.lexists(SOCKET):
        print(f"skip: {SOCKET} exists (a journald runs here); this test needs to be the journal")
        return 77 if failures == 0 else 1
    try:
        journal = Journal()
    except OSError as e:
        print(f"skip: cannot bind {SOCKET}: {e}")
        return 77 if failures == 0 else 1
    try:
        for name, fn in (("journal", lambda t: test_journal(t, journal, ids)),
                         ("no JOURNAL_STREAM", lambda t: test_stderr(t, journal, None, "no JOURNAL_STREAM")),
                         ("another stream", lambda t: test_stderr(
                             t, journal, lambda p: stream_of(os.devnull), "JOURNAL_STREAM of another file"))):
            with tempfile.TemporaryDirectory(prefix="vpmu-it-journal-") as tmp:
                fn(tmp)
    finally:
        journal.close()
    # JOURNAL_STREAM is stderr but nothing listens: the lines are not lost.
    with tempfile.TemporaryDirectory(prefix="vpmu-it-journal-") as tmp:
        test_stderr(tmp, None, stream_of, "JOURNAL_STREAM matches, no journal listening")
    print("it_journal: %s" % ("all passed" if failures == 0 else f"{failures} FAILED"))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
