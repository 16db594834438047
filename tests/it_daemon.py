#!/usr/bin/env python3
"""Integration tests of the real vpmud over its socket (model PMU, model KVM).

Runs vpmud from $VPMU_BUILD_DIR on a private socket and state directory and
talks to it with raw protocol clients (and vpmuctl where built). Each check
prints one line; the first failure exits non-zero with what was expected.
"""
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

BUILD = os.environ.get("VPMU_BUILD_DIR", os.path.join(os.path.dirname(__file__), "..", "build"))
VPMUD = os.path.join(BUILD, "vpmud")
FAKE_VMM = os.path.join(BUILD, "vpmu-fake-vmm")
VPMUCTL = os.path.join(BUILD, "client", "vpmuctl")
failures = 0


def check(cond, what, detail=""):
    global failures
    print(("ok   " if cond else "FAIL ") + what + ("" if cond else f": {detail}"), flush=True)
    if not cond:
        failures += 1


class Client:
    def __init__(self, path, hello=True, timeout=5):
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.settimeout(timeout)
        self.s.connect(path)
        self.buf = b""
        self.next_id = 1
        if hello:
            r = self.call("hello", {"protocol": 1, "client": "it_daemon"})
            assert "result" in r, r

    def send_raw(self, data):
        self.s.sendall(data)

    def read(self):
        while b"\n" not in self.buf:
            chunk = self.s.recv(65536)
            if not chunk:
                raise EOFError("connection closed")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def call(self, method, params=None):
        req = {"id": self.next_id, "method": method}
        self.next_id += 1
        if params is not None:
            req["params"] = params
        self.send_raw((json.dumps(req) + "\n").encode())
        while True:
            r = self.read()
            if "event" not in r:
                return r

    def close(self):
        self.s.close()


class Daemon:
    def __init__(self, tmp, extra=(), env=None, hermetic_cli=True):
        self.tmp = tmp
        self.sock = os.path.join(tmp, "vpmud.sock")
        self.state = os.path.join(tmp, "state")
        self.log = open(os.path.join(tmp, "vpmud.log"), "ab")
        self.extra = list(extra)
        self.env = env
        self.hermetic_cli = hermetic_cli
        self.p = None

    def start(self, wait=True):
        conf = os.path.join(self.tmp, "vpmud.conf")
        if not os.path.exists(conf):
            open(conf, "w").close()
        # Hermetic: no system bus, no host libvirt (both are on by default),
        # from the command line unless the test sets them in the config.
        hermetic = ["--dbus", "none", "--libvirt-uri", "none"] if self.hermetic_cli else []
        args = [VPMUD, "--pmu", "icelake-8360y", "--kvm", "model"] + hermetic + ["--socket", self.sock,
                "--state-dir", self.state, "--config", os.path.join(self.tmp, "vpmud.conf")] + self.extra
        self.p = subprocess.Popen(args, stderr=self.log, env=self.env)
        if wait:
            deadline = time.time() + 10
            while time.time() < deadline:
                try:
                    Client(self.sock).close()
                    return
                except OSError:
                    time.sleep(0.02)
            raise RuntimeError("vpmud did not come up; log in " + self.log.name)

    def stop(self, sig=signal.SIGTERM):
        if self.p and self.p.poll() is None:
            self.p.send_signal(sig)
            self.p.wait(10)
        return self.p.returncode

    def logtext(self):
        with open(self.log.name, "rb") as f:
            return f.read().decode(errors="replace")


def attach_params(name, **kw):
    p = {"name": name, "gp": kw.pop("gp", 2), "vcpu_count": kw.pop("vcpus", 1), "cpus": kw.pop("cpus", "0")}
    p.update(kw)
    return p


def test_protocol_errors(d):
    c = Client(d.sock, hello=False)
    r = c.call("status")
    check(r.get("error", {}).get("code") == "bad_request", "a request before hello is refused", r)
    r = c.call("hello", {"protocol": 99})
    check(r.get("error", {}).get("code") == "unsupported_version", "a newer protocol gets unsupported_version", r)
    r = c.call("hello", {"protocol": 1})
    check("result" in r and r["result"]["protocol"] == 1, "hello answers protocol 1", r)
    r = c.call("frobnicate")
    check(r.get("error", {}).get("code") == "unknown_method", "unknown method", r)
    r = c.call("vm.attach", {"name": "x", "gp": 1, "vcpu_count": 1, "cpus": "0", "colour": "red"})
    check(r.get("error", {}).get("code") == "unknown_field" and "colour" in r["error"].get("field", ""),
          "unknown field named", r)
    r = c.call("vm.attach", {"name": "x", "gp": "many", "vcpu_count": 1, "cpus": "0"})
    check(r.get("error", {}).get("field") == "params.gp", "wrong type names the field", r)
    r = c.call("vm.attach", {"name": "x", "gp": 1, "vcpu_count": 1, "cpus": "3-1"})
    check(r.get("error", {}).get("code") == "invalid_param", "reversed CPU range refused", r)
    c.send_raw(b"{not json\n")
    r = c.read()
    check(r.get("error", {}).get("code") == "bad_request" and r.get("id") is None, "malformed JSON refused", r)
    r = c.call("vm.list")
    check(r.get("result", {}).get("vms") == [], "a refused request changed nothing", r)
    # Oversized frame: refused and the connection closed.
    c.send_raw(b'{"id":1,"method":"status","params":{"x":"' + b"a" * 70000 + b'"}}\n')
    try:
        r = c.read()
        check(r.get("error", {}).get("code") == "too_large", "oversized frame gets too_large", r)
        try:
            c.read()
            check(False, "connection closed after oversized frame")
        except (EOFError, ConnectionResetError):
            check(True, "connection closed after oversized frame")
    except (EOFError, ConnectionResetError) as e:
        check(False, "oversized frame gets an answer before the close", e)
    c.close()


def test_verbs(d):
    c = Client(d.sock)
    w = Client(d.sock)
    r = w.call("watch")
    check("generation" in r.get("result", {}), "watch answers with the generation", r)
    r = c.call("status")["result"]
    check(r["backends"]["pmu_simulated"] is True and r["backends"]["kvm"] == "model",
          "status says the PMU and KVM are simulated", r["backends"])
    r = c.call("pmu")["result"]
    check(r["model"] == "icelake-8360y" and r["gp"] == 8 and r["fixed"] == 4, "pmu", r)
    r = c.call("vm.attach", attach_params("web", priority=500, **{"class": "guaranteed"}, gp=4,
                                          fixed_mask="0x3", vcpus=2, cpus="0-3"))
    check(r.get("result", {}).get("granted", {}).get("passthrough_vcpus") == 2, "vm.attach guaranteed", r)
    ev = w.read()
    check(ev.get("event") == "plan" and ev.get("reason") == "vm.attach web", "watcher sees the attach", ev)
    r = c.call("vm.update", {"name": "web", "priority": 600})
    check("result" in r, "vm.update", r)
    r = c.call("vm.show", {"name": "web"})["result"]
    check(r["priority"] == 600 and r["vcpus"][0]["gp"][:4] == ["passthrough"] * 4, "vm.show routes", r)
    check("generic registers:      4" in r["guest_pmu"]["boot_block"], "vm.show guest PMU view", r["guest_pmu"])
    r = c.call("plan", {"cpus": "0"})["result"]
    check(r["cpus"][0]["guest_gp_mask"] == "0xf", "plan shows the guest partition", r["cpus"])
    r = c.call("session.start", {"name": "prof", "events": ["task-clock", "cycles"], "cpus": "0",
                                 "owner_pid": os.getpid()})
    check("result" in r, "session.start", r)
    time.sleep(0.05)
    r = c.call("session.read", {"name": "prof"})["result"]
    tc, cyc = r["events"][0], r["events"][1]
    check(tc["counted"] and tc["value"] > 0, "software event counted", tc)
    check(not cyc["counted"] and "value" not in cyc, "hardware event on the model PMU: nothing invented", cyc)
    r = c.call("session.list")["result"]
    check([s["name"] for s in r["sessions"]] == ["prof"], "session.list", r)
    r = c.call("session.stop", {"name": "prof"})
    check("result" in r, "session.stop", r)
    r = c.call("vm.detach", {"name": "web"})
    check("result" in r, "vm.detach", r)
    r = c.call("vm.detach", {"name": "web"})
    check(r.get("error", {}).get("code") == "not_found", "detaching twice: not_found", r)
    c.close()
    w.close()


def wait_until(pred, timeout=2.0):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if pred():
            return time.time() - t0
        time.sleep(0.005)
    return None


def test_owner_death(d):
    c = Client(d.sock)
    if os.access("/dev/kvm", os.R_OK | os.W_OK) and os.path.exists(FAKE_VMM):
        vmm = subprocess.Popen([FAKE_VMM, "2"], stdout=subprocess.PIPE)
        line = vmm.stdout.readline().decode()
        vm_fd = int(line.split("vm_fd=")[1].split()[0])
        r = c.call("vm.attach", attach_params("vmm", vcpus=2, cpus="0-1", owner={"pid": vmm.pid, "vm_fd": vm_fd}))
        check(r.get("result", {}).get("bound") is True, "VM lease bound to a real KVM VMM", r)
        t_kill = time.time()
        vmm.kill()
        vmm.wait()
        dt = wait_until(lambda: Client(d.sock).call("vm.list")["result"]["vms"] == [])
        check(dt is not None and (time.time() - t_kill) < 0.5,
              f"VMM death releases its lease ({(dt or 0) * 1000:.0f} ms after kill)")
    else:
        print("skip VMM death: no /dev/kvm or vpmu-fake-vmm")
    child = subprocess.Popen(["sleep", "60"])
    r = c.call("session.start", {"name": "owned", "events": ["task-clock"], "cpus": "0", "owner_pid": child.pid})
    check("result" in r, "session owned by another process", r)
    child.kill()
    child.wait()
    dt = wait_until(lambda: Client(d.sock).call("session.list")["result"]["sessions"] == [])
    check(dt is not None and dt < 0.5, f"owner death stops the session ({(dt or 0) * 1000:.0f} ms)")
    c.close()


def test_concurrent_clients(d):
    errors = []

    def worker(i):
        try:
            c = Client(d.sock)
            for _ in range(5):
                if "result" not in c.call("plan", {"cpus": "0-3"}):
                    errors.append((i, "plan"))
            r = c.call("vm.attach", attach_params(f"c{i}", gp=1, cpus=str(i % 144)))
            if "result" not in r:
                errors.append((i, r))
            c.close()
        except Exception as e:  # noqa: BLE001 - every failure is reported
            errors.append((i, repr(e)))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(100)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    check(not errors, "100 concurrent clients", errors[:3])
    names = sorted(v["name"] for v in Client(d.sock).call("vm.list")["result"]["vms"])
    check(names == sorted(f"c{i}" for i in range(100)), "100 concurrent attaches all present", len(names))
    c = Client(d.sock)
    for i in range(100):
        c.call("vm.detach", {"name": f"c{i}"})
    c.close()


def test_slow_watcher_cut_off(d):
    # A watcher that never reads must not hold the daemon's memory: past
    # 8 MiB of queued events it is disconnected, and stops counting.
    lazy = Client(d.sock)
    lazy.call("watch")
    c = Client(d.sock)
    check(c.call("status")["result"]["watchers"] == 1, "one watcher registered")
    big = attach_params("wide", gp=8, fixed_mask="0x7", vcpus=64, cpus="0-63")
    for i in range(400):
        c.call("vm.attach", big)
        c.call("vm.detach", {"name": "wide"})
        if i % 50 == 49 and c.call("status")["result"]["watchers"] == 0:
            break
    w = c.call("status")["result"]["watchers"]
    check(w == 0 and "does not read what it is sent" in d.logtext(),
          "a watcher that does not read is cut off", f"watchers={w}")
    r = c.call("plan", {"cpus": "0"})
    check("result" in r, "the daemon serves on after cutting a watcher off", r)
    c.close()
    lazy.close()


def test_crash_restart(d):
    acked = []
    stop = threading.Event()

    def burst():
        c = Client(d.sock)
        i = 0
        try:
            while not stop.is_set():
                r = c.call("vm.attach", attach_params(f"burst{i}", gp=1, cpus=str(i % 144)))
                if "result" in r:
                    acked.append(f"burst{i}")
                i += 1
        except (EOFError, OSError, ConnectionResetError):
            pass

    t = threading.Thread(target=burst)
    t.start()
    wait_until(lambda: len(acked) >= 30, 10)
    d.p.send_signal(signal.SIGKILL)
    d.p.wait()
    stop.set()
    t.join()
    d.start()
    names = [v["name"] for v in Client(d.sock).call("vm.list")["result"]["vms"]]
    missing = [n for n in acked if n not in names]
    check(len(acked) >= 30 and not missing, f"kill -9 mid-burst: all {len(acked)} acknowledged leases back", missing[:5])
    check(len(names) == len(set(names)), "nothing duplicated after restart", len(names))
    c = Client(d.sock)
    for n in names:
        c.call("vm.detach", {"name": n})
    c.close()


def test_unprivileged(d):
    if os.geteuid() != 0:
        print("skip unprivileged peers: not root")
        return
    user = "vpmu-test"
    try:
        pw = pwd.getpwnam(user)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", user], check=True)
        pw = pwd.getpwnam(user)
    os.chmod(d.tmp, 0o755)
    code = r"""
import json, socket, sys
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); f = s.makefile("rw")
out = []
for req in [{"id":1,"method":"hello","params":{"protocol":1}}, {"id":2,"method":"status"},
            {"id":3,"method":"plan","params":{"cpus":"0"}},
            {"id":4,"method":"vm.attach","params":{"name":"evil","gp":1,"vcpu_count":1,"cpus":"0"}},
            {"id":5,"method":"session.start","params":{"name":"evil","events":["task-clock"],"cpus":"0"}},
            {"id":6,"method":"vm.detach","params":{"name":"keep"}}]:
    f.write(json.dumps(req) + "\n"); f.flush(); out.append(json.loads(f.readline()))
print(json.dumps(out))
"""
    Client(d.sock).call("vm.attach", attach_params("keep"))

    def demote():
        os.setgroups([])
        os.setgid(pw.pw_gid)
        os.setuid(pw.pw_uid)

    # The system interpreter: a per-user one (pyenv) may be unreadable to the test user.
    py = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
    p = subprocess.run([py, "-c", code, d.sock], capture_output=True, preexec_fn=demote, timeout=20)
    try:
        out = json.loads(p.stdout)
    except ValueError:
        check(False, "unprivileged client ran", p.stderr.decode())
        return
    check("result" in out[1] and "result" in out[2], "unprivileged peer may read status and plan", out[1:3])
    check(all(o.get("error", {}).get("code") == "permission_denied" for o in out[3:6]),
          "unprivileged peer may not attach, start sessions or detach", out[3:6])
    names = [v["name"] for v in Client(d.sock).call("vm.list")["result"]["vms"]]
    check(names == ["keep"], "refused requests changed nothing", names)
    Client(d.sock).call("vm.detach", {"name": "keep"})

    # The same user with group vpmu as a supplementary group may change
    # things (the daemon reads the groups from the connection).
    import grp
    try:
        gid = grp.getgrnam("vpmu").gr_gid
    except KeyError:
        subprocess.run(["groupadd", "--system", "vpmu"], check=True)
        gid = grp.getgrnam("vpmu").gr_gid

    def member():
        os.setgroups([gid])
        os.setgid(pw.pw_gid)
        os.setuid(pw.pw_uid)

    code2 = r"""
import json, socket, sys
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); f = s.makefile("rw")
out = []
for req in [{"id":1,"method":"hello","params":{"protocol":1}},
            {"id":2,"method":"vm.attach","params":{"name":"grp","gp":1,"vcpu_count":1,"cpus":"0"}},
            {"id":3,"method":"vm.detach","params":{"name":"grp"}}]:
    f.write(json.dumps(req) + "\n"); f.flush(); out.append(json.loads(f.readline()))
print(json.dumps(out))
"""
    p = subprocess.run([py, "-c", code2, d.sock], capture_output=True, preexec_fn=member, timeout=20)
    try:
        out = json.loads(p.stdout)
        check("result" in out[1] and "result" in out[2], "a member of group vpmu may attach and detach", out[1:])
    except ValueError:
        check(False, "group member client ran", p.stderr.decode())


def test_config_and_reload(tmp):
    conf = os.path.join(tmp, "bad.conf")
    with open(conf, "w") as f:
        f.write("kvm = model\n\ndefault_priority = loud\n")
    p = subprocess.run([VPMUD, "--config", conf, "--socket", os.path.join(tmp, "x.sock"),
                        "--state-dir", os.path.join(tmp, "x")], capture_output=True, timeout=10)
    err = p.stderr.decode()
    check(p.returncode == 2 and "bad.conf:3" in err and "default_priority" in err,
          "bad config refused at start, line and field named", err.strip())


def test_notify_and_reload(tmp):
    ns_path = os.path.join(tmp, "notify.sock")
    ns = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    ns.bind(ns_path)
    ns.settimeout(5)
    # Without WATCHDOG_PID, sd_watchdog_enabled() trusts WATCHDOG_USEC alone.
    env = dict(os.environ, NOTIFY_SOCKET=ns_path, WATCHDOG_USEC="200000")
    # libvirt_uri comes from the file here, so that a reload can change it.
    with open(os.path.join(tmp, "vpmud.conf"), "w") as f:
        f.write("dbus = none\nlibvirt_uri = none\n")
    d = Daemon(tmp, env=env, hermetic_cli=False)
    d.start(wait=False)
    msgs = []
    deadline = time.time() + 5
    while time.time() < deadline and not (any("WATCHDOG=1" in m for m in msgs) and any("READY=1" in m for m in msgs)):
        try:
            msgs.append(ns.recv(4096).decode())
        except socket.timeout:
            break
    text = "\n".join(msgs)
    check("READY=1" in text, "sd_notify READY=1", text)
    check("STATUS=" in text and "simulated" in text, "sd_notify STATUS= with a summary", text)
    check("WATCHDOG=1" in text, "sd_notify WATCHDOG=1 when WatchdogSec is set", text)
    with open(os.path.join(tmp, "vpmud.conf"), "w") as f:
        f.write("default_priority = 42\ndbus = none\nlibvirt_uri = test:///default\n")
    d.p.send_signal(signal.SIGHUP)
    ok = wait_until(lambda: "config reloaded" in d.logtext(), 3)
    log = d.logtext()
    check(ok is not None and "applied default_priority" in log and "needs restart to change: libvirt_uri" in log,
          "SIGHUP reload says what it applied and what needs a restart", log[-300:])
    r = Client(d.sock).call("vm.attach", attach_params("dflt"))
    r = Client(d.sock).call("vm.show", {"name": "dflt"})["result"]
    check(r["priority"] == 42, "reloaded default priority applies to new leases", r["priority"])
    Client(d.sock).call("vm.detach", {"name": "dflt"})
    d.p.send_signal(signal.SIGTERM)
    msgs = []
    try:
        while True:
            msgs.append(ns.recv(4096).decode())
            if any("STOPPING=1" in m for m in msgs):
                break
    except socket.timeout:
        pass
    check(any("STOPPING=1" in m for m in msgs), "sd_notify STOPPING=1 on SIGTERM", msgs)
    d.p.wait(10)
    check(d.p.returncode == 0, "clean exit on SIGTERM", d.p.returncode)
    open(os.path.join(tmp, "vpmud.conf"), "w").close()


def test_socket_activation(tmp):
    tool = shutil.which("systemd-socket-activate")
    if not tool:
        print("skip socket activation: systemd-socket-activate missing")
        return
    sock = os.path.join(tmp, "act.sock")
    p = subprocess.Popen([tool, "-l", sock, VPMUD, "--pmu", "icelake-8360y", "--kvm", "model",
                          "--dbus", "none", "--libvirt-uri", "none", "--state-dir", os.path.join(tmp, "act-state"), "--socket", os.path.join(tmp, "unused.sock")],
                         stderr=subprocess.PIPE)
    def answers():
        # The path appears at bind(), a moment before listen().
        try:
            return Client(sock).call("status")
        except OSError:
            return None

    r = None
    deadline = time.time() + 10
    while r is None and time.time() < deadline:
        r = answers()
        if r is None:
            time.sleep(0.05)
    try:
        r = r or {}
        check("result" in r, "serves on a socket-activated fd", r)
        check(not os.path.exists(os.path.join(tmp, "unused.sock")), "no own bind under socket activation")
    finally:
        p.terminate()
        p.wait(10)


def main():
    tmp = tempfile.mkdtemp(prefix="vpmu-it-")
    d = Daemon(tmp)
    d.start()
    try:
        test_protocol_errors(d)
        test_verbs(d)
        test_owner_death(d)
        test_concurrent_clients(d)
        test_slow_watcher_cut_off(d)
        test_crash_restart(d)
        test_unprivileged(d)
    finally:
        d.stop()
    test_config_and_reload(tmp)
    test_notify_and_reload(tmp)
    test_socket_activation(tmp)
    if failures:
        print(f"{failures} check(s) failed; daemon log: {d.log.name}")
        sys.exit(1)
    shutil.rmtree(tmp, ignore_errors=True)
    print("all daemon integration checks passed")


if __name__ == "__main__":
    main()
