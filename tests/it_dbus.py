#!/usr/bin/python3
"""The real vpmud on a private system-type dbus-daemon whose configuration
includes our shipped bus policy (systemd/org.vpmu.Broker1.conf).

Clients: dbus-python connections (libdbus) for agents that stay on the bus,
busctl (sd-bus) for one-shot calls, introspection and `busctl monitor` for
every signal the daemon sends. A polkit mock (python3-dbusmock's polkitd
template) on the same bus allows, denies and hangs for the non-root caller
(vpmu-test). The rights table (docs/protocol.md, "Who may call what") is
checked row by row on both doors, for root, a member of the admin group and
a plain user, on their own leases and on others'.
Each check prints one line; any failure makes the exit status non-zero.
"""
import atexit
import ctypes
import grp
import json
import os
import pwd
import re
import shutil
import socket
import signal
import subprocess
import sys
import tempfile
import time
import xml.dom.minidom as minidom

try:
    import dbus
except ImportError:
    print("skip: python3-dbus is not installed")
    sys.exit(77)

SRC = os.environ.get("VPMU_SOURCE_DIR", os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
BUILD = os.environ.get("VPMU_BUILD_DIR", os.path.join(SRC, "build"))
VPMUD = os.path.join(BUILD, "vpmud")
FAKE_VMM = os.path.join(BUILD, "vpmu-fake-vmm")
NAME, PATH = "org.vpmu.Broker1", "/org/vpmu/Broker1"
MGR, VM_IF, SESS_IF = NAME + ".Manager", NAME + ".VM", NAME + ".Session"
ERR = NAME + ".Error."
TEST_USER = "vpmu-test"
ADMIN_GROUP = "vpmu"
POLKIT_ACTION = "org.vpmu.broker1.manage"
CLASS_GUARANTEED, CLASS_PREFERRED = 1, 2
ROUTE_MULTIPLEXED, ROUTE_PASSTHROUGH = 2, 3
# The bus enums of docs/dbus-api.md, by wire value (0 = unknown).
ROUTES = [None, "disabled", "multiplexed", "passthrough", "reserved", "at-risk", "mediated", "none"]
FLAVOURS = [None, "extension", "perf-based", "mediated", "none"]
ROUTES_KINDS = [None, "enforced", "simulated", "advisory"]
PLACEMENTS = [None, "software", "multiplexed", "dedicated"]
BACKENDS = [None, "ioctl", "advisory", "model"]
# The routes each flavour gives a PMC a lease asked for (docs/protocol.md).
FLAVOUR_ROUTES = {"extension": {"passthrough", "multiplexed"}, "perf-based": {"reserved", "at-risk"},
                  "mediated": {"mediated"}, "none": {"none"}}
failures = 0


_vmms = []
_sleepers = []


def spawn_vmm():
    """A real KVM VMM (vpmu-fake-vmm) that is killed at exit whatever happens."""
    p = subprocess.Popen([FAKE_VMM, "1"], stdout=subprocess.PIPE, text=True)
    _vmms.append(p)
    return p


def _kill_vmms():
    for p in _vmms + _sleepers:
        if p.poll() is None:
            p.kill()
            p.wait()


atexit.register(_kill_vmms)


def check(cond, what, detail=""):
    global failures
    print(("ok   " if cond else "FAIL ") + what + ("" if cond else f": {detail}"), flush=True)
    if not cond:
        failures += 1


def wait_until(pred, timeout=3.0):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if pred():
            return True
        time.sleep(0.02)
    return False


def bus_conf(tmp, sock):
    # The defaults of Debian's system.conf that matter here: nobody owns
    # names or calls methods unless a policy file says so.
    policy = os.path.join(SRC, "systemd", "org.vpmu.Broker1.conf")
    return f"""<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={sock}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.PolicyKit1"/>
  </policy>
  <policy user="root">
    <allow own="org.freedesktop.PolicyKit1"/>
  </policy>
  <include>{policy}</include>
</busconfig>
"""


class Env:
    def __init__(self, kvm="model"):
        self.tmp = tempfile.mkdtemp(prefix="vpmu-it-dbus-")
        os.chmod(self.tmp, 0o755)  # the test user reaches the bus socket
        self.sock = os.path.join(self.tmp, "bus.sock")
        self.addr = "unix:path=" + self.sock
        self.procs = []
        with open(os.path.join(self.tmp, "bus.conf"), "w") as f:
            f.write(bus_conf(self.tmp, self.sock))
        self.bus_log = open(os.path.join(self.tmp, "dbus-daemon.log"), "w")
        self.busd = self.spawn(["dbus-daemon", "--config-file=" + os.path.join(self.tmp, "bus.conf"),
                                "--nofork", "--nopidfile"], stderr=self.bus_log)
        if not wait_until(lambda: os.path.exists(self.sock)):
            raise RuntimeError("dbus-daemon did not start")
        self.env = dict(os.environ, DBUS_SYSTEM_BUS_ADDRESS=self.addr)
        self.monitor_out = os.path.join(self.tmp, "monitor.json")
        self.mon = self.spawn(["busctl", "--address=" + self.addr, "monitor", "--json=short",
                               "--match=sender=" + NAME], stdout=open(self.monitor_out, "w"),
                              stderr=subprocess.DEVNULL)
        state = os.path.join(self.tmp, "state")
        conf = os.path.join(self.tmp, "vpmud.conf")
        open(conf, "w").close()
        self.vpmud_log = os.path.join(self.tmp, "vpmud.log")
        self.sock_path = os.path.join(self.tmp, "vpmud.sock")
        self.vpmud = self.spawn([VPMUD, "--pmu", "icelake-8360y", "--kvm", kvm,
                                 "--socket", self.sock_path, "--state-dir", state,
                                 "--config", conf, "--dbus", self.addr],
                                stderr=open(self.vpmud_log, "w"))
        self.bus = dbus.bus.BusConnection(self.addr)
        if not wait_until(lambda: self.bus.name_has_owner(NAME), 5):
            raise RuntimeError("vpmud did not take " + NAME + ":\n" + open(self.vpmud_log).read())
        self.polkit = None

    def spawn(self, args, **kw):
        p = subprocess.Popen(args, **kw)
        self.procs.append(p)
        return p

    def start_polkit_mock(self):
        self.polkit = self.spawn([sys.executable, "-m", "dbusmock", "--system", "--template", "polkitd"],
                                 env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if not wait_until(lambda: self.bus.name_has_owner("org.freedesktop.PolicyKit1"), 10):
            raise RuntimeError("polkit mock did not start")
        return dbus.Interface(self.bus.get_object("org.freedesktop.PolicyKit1",
                                                  "/org/freedesktop/PolicyKit1/Authority"),
                              "org.freedesktop.DBus.Mock")

    def close(self):
        """Stops everything; returns vpmud's log (sanitizer reports end up there)."""
        for p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(5)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        log = open(self.vpmud_log).read()
        shutil.rmtree(self.tmp, ignore_errors=True)
        return log

    def signals(self):
        out = []
        with open(self.monitor_out) as f:
            for line in f:
                try:
                    m = json.loads(line)
                except ValueError:
                    continue
                if m.get("type") == "signal":
                    out.append(m)
        return out


def busctl(env, *args, user=None):
    cmd = ["busctl", "--address=" + env.addr, "--json=short"] + list(args)
    if user:
        cmd = ["runuser", "-u", user, "--"] + cmd
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
    return p.returncode, p.stdout, p.stderr


def mgr_call(env, method, sig, *args, user=None):
    return busctl(env, "call", NAME, PATH, MGR, method, sig, *[str(a) for a in args], user=user)


def wire(names, s):
    """A broker string as its bus enum value; 0 for one the bus does not know."""
    return names.index(s) if s in names[1:] else 0


def sock_call(env, method, params=None):
    """One call on the socket door of env's daemon, as root: the answer
    the bus is compared with."""
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(env.sock_path)
        f = s.makefile("rw")
        for i, (m, p) in enumerate((("hello", {"protocol": 1, "client": "it_dbus"}), (method, params))):
            req = {"id": i + 1, "method": m}
            if p is not None:
                req["params"] = p
            f.write(json.dumps(req) + "\n")
            f.flush()
            r = json.loads(f.readline())
    return r


def vpmuctl_status(env):
    """What `vpmuctl status` says for env's daemon (its JSON)."""
    p = subprocess.run([os.path.join(BUILD, "client", "vpmuctl"), "--socket", env.sock_path, "--json", "status"],
                       capture_output=True, text=True, timeout=20)
    try:
        return json.loads(p.stdout)
    except ValueError:
        check(False, "vpmuctl --json status", p.stderr)
        return {"backends": {}}


def check_flavour_props(env, where):
    """The manager's flavour properties and GetStatus say what the socket's
    status says for the same daemon."""
    sb = vpmuctl_status(env)["backends"]
    p = props(env, PATH, MGR)
    check(sb.get("kvm_flavour") in FLAVOURS[1:] and p["Flavour"] == wire(FLAVOURS, sb.get("kvm_flavour"))
          and p["RoutesKind"] == wire(ROUTES_KINDS, sb.get("kvm_routes")) and p["RoutesKind"] != 0,
          "%s: Flavour and RoutesKind are the socket's %s, %s" % (where, sb.get("kvm_flavour"), sb.get("kvm_routes")),
          (p["Flavour"], p["RoutesKind"], sb))
    check(p["FlavourEffect"] == sb.get("kvm_flavour_effect") and p["FlavourEffect"].startswith("guests: ")
          and "; host sessions: " in p["FlavourEffect"], "%s: FlavourEffect is the socket's one line" % where,
          (p["FlavourEffect"], sb.get("kvm_flavour_effect")))
    check(list(p["Warnings"]) == sb.get("kvm_warnings", []), "%s: Warnings are the socket's" % where,
          (list(p["Warnings"]), sb.get("kvm_warnings")))
    check(p["Backend"] == wire(BACKENDS, sb.get("kvm")) and bool(p["BackendEnforced"]) == sb.get("kvm_enforced"),
          "%s: Backend and BackendEnforced are the socket's" % where, (p["Backend"], sb))
    for label, b in (("GetStatus", dbus.Interface(env.bus.get_object(NAME, PATH), MGR).GetStatus()["backends"]),
                     ("the Backends property", p["Backends"])):
        check(b["kvm_flavour"] == p["Flavour"] and b["kvm_routes"] == p["RoutesKind"]
              and b["kvm_flavour_effect"] == p["FlavourEffect"]
              and list(b.get("kvm_warnings", [])) == sb.get("kvm_warnings", []),
              "%s: %s carries kvm_flavour, kvm_routes, kvm_flavour_effect, kvm_warnings" % (where, label), b)
    return sb


def bus_routes(vp):
    """A VM's Routes property with the route enums as the socket's names."""
    name = lambda x: ROUTES[x] if x < len(ROUTES) else "?"
    return [{"vcpu": int(r[0]), "cpus": str(r[1]), "gp": [name(x) for x in r[2]],
             "fixed": [name(x) for x in r[3]]} for r in vp["Routes"]]


def interface_xml(xml_text, iface):
    """The named interface of an introspection document, whitespace-free,
    so that the shipped XML and the live one compare structurally."""
    doc = minidom.parseString(xml_text)

    def strip(n):
        for c in list(n.childNodes):
            if c.nodeType in (c.TEXT_NODE, c.COMMENT_NODE) and (c.nodeType == c.COMMENT_NODE or not c.data.strip()):
                n.removeChild(c)
            else:
                strip(c)
    strip(doc)
    for el in doc.getElementsByTagName("interface"):
        if el.getAttribute("name") == iface:
            return el.toxml()
    return None


def props(env, path, iface):
    return env.bus.get_object(NAME, path).GetAll(iface, dbus_interface=dbus.PROPERTIES_IFACE)


def err_name(fn):
    try:
        fn()
    except dbus.DBusException as e:
        return e.get_dbus_name(), e.get_dbus_message()
    return None, None


# ---------------------------------------------------------------- identities

def identity(who):
    """preexec_fn that makes a child root (None), a member of the admin
    group ("admin": vpmu-test with group vpmu), or a plain user ("user",
    "polkit": vpmu-test without it). The groups reach vpmud through the
    kernel (SO_PEERGROUPS on the socket, UnixGroupIDs on the bus)."""
    if who == "root":
        return None
    pw = pwd.getpwnam(TEST_USER)
    groups = [grp.getgrnam(ADMIN_GROUP).gr_gid] if who == "admin" else []

    def demote():
        os.setgroups(groups)
        os.setgid(pw.pw_gid)
        os.setuid(pw.pw_uid)
    return demote


def sleeper(who):
    """A process of that identity that lives until the test ends: owner of
    sessions that must outlive the client that started them."""
    p = subprocess.Popen(["sleep", "600"], preexec_fn=identity(who))
    _sleepers.append(p)
    return p.pid


# One client program per door: it runs a list of operations on one
# connection and prints, per operation, whether it passed and else the
# error. Operations are the protocol's method names; on the bus vm.list,
# vm.show and session.list are the objects the door exports.
DBUS_CLIENT = r"""
import dbus, json, sys
NAME, PATH = "org.vpmu.Broker1", "/org/vpmu/Broker1"
addr, ops = sys.argv[1], json.loads(sys.argv[2])
b = dbus.bus.BusConnection(addr)
root = b.get_object(NAME, PATH)
mgr = dbus.Interface(root, NAME + ".Manager")
label = lambda n: "".join(c if c.isascii() and c.isalnum() else "_%02x" % ord(c) for c in n)
def managed(kind):
    objs = root.GetManagedObjects(dbus_interface="org.freedesktop.DBus.ObjectManager")
    return [str(p).rsplit("/", 1)[1] for p in objs if str(p).startswith(PATH + "/" + kind + "/")]
def plain(v):  # dbus-python values as JSON ones (Boolean is an int there)
    if isinstance(v, dbus.Boolean):
        return bool(v)
    if isinstance(v, dict):
        return {str(k): plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [plain(x) for x in v]
    if isinstance(v, str):
        return str(v)
    if isinstance(v, float):
        return float(v)
    return int(v)
out = []
for op in ops:
    m, a = op[0], op[1:]
    value = None
    try:
        if m == "props":  # props vm|session NAME: GetAll
            iface = NAME + (".VM" if a[0] == "vm" else ".Session")
            value = plain(b.get_object(NAME, PATH + "/" + a[0] + "/" + label(a[1])).GetAll(
                iface, dbus_interface=dbus.PROPERTIES_IFACE))
        elif m == "get":  # get vm|session NAME PROPERTY: Get
            iface = NAME + (".VM" if a[0] == "vm" else ".Session")
            value = plain(b.get_object(NAME, PATH + "/" + a[0] + "/" + label(a[1])).Get(
                iface, a[2], dbus_interface=dbus.PROPERTIES_IFACE))
        elif m == "objects":
            value = plain(root.GetManagedObjects(dbus_interface="org.freedesktop.DBus.ObjectManager"))
        elif m == "getplan": value = plain(mgr.GetPlan(dbus.Dictionary({}, signature="sv")))
        elif m == "polkit":
            pk = b.get_object("org.freedesktop.PolicyKit1", "/org/freedesktop/PolicyKit1/Authority")
            pk.SetAllowed(dbus.Array(a, signature="s"), dbus_interface="org.freedesktop.DBus.Mock")
        elif m == "status": mgr.GetStatus()
        elif m == "pmu": mgr.GetPmu()
        elif m == "plan": mgr.GetPlan(dbus.Dictionary({}, signature="sv"))
        elif m == "vm.list": managed("vm")
        elif m == "session.list": managed("session")
        elif m == "vm.show":
            b.get_object(NAME, PATH + "/vm/" + label(a[0])).GetAll(NAME + ".VM", dbus_interface=dbus.PROPERTIES_IFACE)
        elif m == "vm.attach":
            mgr.AttachVM(a[0], {"vcpus": dbus.Array([a[1]], signature="s"), "gp": dbus.UInt32(1)})
        elif m == "vm.update": mgr.UpdateVM(a[0], {"priority": dbus.UInt32(150)})
        elif m == "vm.bind": mgr.BindVM(a[0], dbus.UInt32(a[1]), dbus.Dictionary({}, signature="sv"))
        elif m == "vm.detach": mgr.DetachVM(a[0])
        elif m == "session.start":
            opts = {"cpus": a[1]}
            if len(a) > 2:
                opts["owner_pid"] = dbus.Int32(a[2])
            mgr.StartSession(a[0], ["cycles"], opts)
        elif m == "session.read": mgr.ReadSession(a[0])
        elif m == "session.stop": mgr.StopSession(a[0])
        else: raise SystemExit("unknown op " + m)
        out.append({"op": op, "ok": True, "value": value})
    except dbus.DBusException as e:
        out.append({"op": op, "ok": False, "error": e.get_dbus_name(), "message": e.get_dbus_message()})
print(json.dumps(out))
"""

SOCKET_CLIENT = r"""
import json, socket, sys
path, ops = sys.argv[1], json.loads(sys.argv[2])
s = socket.socket(socket.AF_UNIX); s.connect(path); f = s.makefile("rw")
def call(method, params=None):
    call.n += 1
    req = {"id": call.n, "method": method}
    if params is not None:
        req["params"] = params
    f.write(json.dumps(req) + "\n"); f.flush()
    return json.loads(f.readline())
call.n = 0
call("hello", {"protocol": 1, "client": "it_dbus"})
out = []
for op in ops:
    m, a = op[0], op[1:]
    p = None
    if m in ("vm.show", "vm.detach", "session.read", "session.stop"): p = {"name": a[0]}
    elif m == "vm.attach": p = {"name": a[0], "gp": 1, "vcpu_count": 1, "cpus": a[1]}
    elif m == "vm.update": p = {"name": a[0], "priority": 150}
    elif m == "vm.bind": p = {"name": a[0], "pid": a[1]}
    elif m == "session.start":
        p = {"name": a[0], "events": ["cycles"], "cpus": a[1]}
        if len(a) > 2:
            p["owner_pid"] = a[2]
    r = call(m, p)
    if "result" in r:
        out.append({"op": op, "ok": True, "result": r["result"]})
    else:
        out.append({"op": op, "ok": False, "error": r["error"]["code"], "message": r["error"]["message"]})
print(json.dumps(out))
"""


def run_ops(env, door, who, ops):
    """Runs ops as who through door; returns one outcome per op (or None
    when the client itself failed, which is reported)."""
    py = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
    if door == "dbus":
        args = [py, "-c", DBUS_CLIENT, env.addr, json.dumps(ops)]
    else:
        args = [py, "-c", SOCKET_CLIENT, env.sock_path, json.dumps(ops)]
    p = subprocess.run(args, capture_output=True, text=True, timeout=60, preexec_fn=identity(who))
    try:
        return json.loads(p.stdout)
    except ValueError:
        check(False, "%s client as %s ran" % (door, who), p.stderr[-2000:])
        return None


# The methods whose rights are checked on both doors.
METHODS = ("status", "pmu", "plan", "vm.list", "vm.show", "vm.attach", "vm.update", "vm.bind", "vm.detach",
           "session.start", "session.list", "session.read", "session.stop")


def documented_rights():
    """The rights table of docs/protocol.md ("Who may call what"), by its
    socket column: anyone; admin (root or the admin group; on D-Bus also
    polkit); owner (the session's owner, or an admin). The test checks the
    daemon against what the documentation says."""
    text = open(os.path.join(SRC, "docs", "protocol.md")).read()
    if "## Who may call what" not in text:
        return {}
    section = text.split("## Who may call what", 1)[1].split("\n## ", 1)[0]
    rights = {}
    for line in section.splitlines():
        if not line.startswith("| `"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        socket_col, dbus_col = cells[1], cells[2]
        if "owner" in socket_col:
            right = "owner"
        elif "admin group" in socket_col:
            right = "admin"
        elif socket_col.startswith("anyone"):
            right = "anyone"
        else:
            right = "?"
        if right in ("owner", "admin") and "polkit" not in dbus_col:
            right = "?"  # the bus column must offer polkit where the socket asks for an admin
        for m in re.findall(r"`([a-z]+(?:\.[a-z]+)?)`", cells[0]):
            rights[m] = right
    return rights


RIGHTS = documented_rights()


def may(method, who, own):
    right = RIGHTS[method]
    admin = who in ("root", "admin", "polkit")
    return right == "anyone" or admin or (right == "owner" and own)


def permission_denied(outcome):
    return not outcome["ok"] and outcome["error"] in ("permission_denied", ERR + "PermissionDenied")


def denied(door, outcome):
    """Refused for lack of rights: permission_denied, on every row (another
    user's session too: every caller sees it by name)."""
    return permission_denied(outcome)


def clean_leases(env, keep=()):
    """Root removes every lease but keep, through the socket."""
    out = run_ops(env, "socket", "root", [["vm.list"], ["session.list"]]) or []
    ops = []
    for o in out:
        for v in o.get("result", {}).get("vms", []):
            if v["name"] not in keep:
                ops.append(["vm.detach", v["name"]])
        for s in o.get("result", {}).get("sessions", []):
            if s["name"] not in keep:
                ops.append(["session.stop", s["name"]])
    if ops:
        run_ops(env, "socket", "root", ops)


def test_rights(env, mock):
    """Each row of the rights table, on both doors, for root, an admin-group
    member and a plain user (and, on the bus, a plain user whom polkit
    allows), on their own leases and on leases of others."""
    check(all(RIGHTS.get(m) in ("anyone", "admin", "owner") for m in METHODS),
          "docs/protocol.md gives every method a right", RIGHTS)
    if not all(m in RIGHTS for m in METHODS):
        return
    mock.SetAllowed(dbus.Array([], signature="s"))
    root_owner, user_owner = sleeper("root"), sleeper("user")
    ran = 0
    for door in ("socket", "dbus"):
        for who in (("root", "admin", "user", "polkit") if door == "dbus" else ("root", "admin", "user")):
            clean_leases(env)
            mine, other = "%s-%s" % (door, who), "%s-%s-other" % (door, who)
            # Leases of someone else (root), and, for the plain user, its own
            # leases, made while it was in the admin group (same uid).
            setup = run_ops(env, "socket", "root", [["vm.attach", other + "-vm", "12"],
                                                    ["session.start", other + "-s", "13", root_owner]]) or []
            if who == "user":
                setup += run_ops(env, "socket", "admin", [["vm.attach", mine + "-vm", "12"],
                                                          ["session.start", mine + "-s", "13", user_owner]]) or []
            check(len(setup) in (2, 4) and all(o["ok"] for o in setup), "%s/%s: leases to act on" % (door, who),
                  setup)
            owner_pid = root_owner if who == "root" else user_owner
            ops = [["status"], ["pmu"], ["plan"], ["vm.list"], ["session.list"], ["vm.show", other + "-vm"]]
            if who == "polkit":
                ops.append(["polkit", POLKIT_ACTION])
            own = [["vm.attach", mine + "-vm", "12"], ["session.start", mine + "-s", "13"]] if who != "user" else \
                [["vm.attach", mine + "-new-vm", "12"], ["session.start", mine + "-new-s", "13"]]
            ops += own
            ops += [["vm.update", mine + "-vm"], ["vm.bind", mine + "-vm", owner_pid], ["session.read", mine + "-s"],
                    ["session.stop", mine + "-s"], ["vm.detach", mine + "-vm"]]
            ops += [["vm.update", other + "-vm"], ["vm.bind", other + "-vm", owner_pid],
                    ["session.read", other + "-s"], ["session.stop", other + "-s"], ["vm.detach", other + "-vm"]]
            out = run_ops(env, door, who, ops)
            if out is None:
                continue
            for o in out:
                op = o["op"]
                if op[0] == "polkit":
                    continue
                # Every lease named here is either the caller's (mine-*) or root's (other-*).
                is_own = len(op) > 1 and not op[1].startswith(other)
                want = may(op[0], who, is_own)
                label = "%s %s %s%s" % (door, who, op[0],
                                        "" if len(op) < 2 else " on own lease" if is_own else " on another's lease")
                if not want:
                    # A refusal names what this door accepts: polkit only on
                    # the bus, and the lease's owner where the owner may.
                    ok = denied(door, o) and (POLKIT_ACTION in o["message"]) == (door == "dbus")
                    if ok and RIGHTS[op[0]] == "owner":
                        ok = "the session's owner" in o["message"]
                    check(ok, label + ": refused", o)
                elif op[0] == "vm.bind":
                    # Allowed, but a sleeping process holds no KVM VM.
                    check(not denied(door, o), label + ": allowed", o)
                else:
                    check(o["ok"], label + ": allowed", o)
                ran += 1
    mock.SetAllowed(dbus.Array([], signature="s"))
    clean_leases(env)
    check(ran > 100, "the rights table was checked on both doors (%d cases)" % ran)


# The properties that depend on who asks (docs/dbus-api.md, "What a caller
# sees"): withheld from a caller who is not the lease's owner, root or in
# the admin group, and never carried by a signal.
VM_WITHHELD = {"Origin": "", "Owner": [0, -1], "Withheld": True}
SESSION_WITHHELD = {"Pid": 0, "OwnerPid": 0, "Events": [], "EventReasons": [], "Withheld": True}


def test_visibility(env, mock):
    """What each caller sees of root's VM and session on the bus: the
    properties (GetAll, Get, GetManagedObjects) and GetPlan, for root, an
    admin-group member, a plain user and a plain user polkit allows (polkit
    is no credential for a read)."""
    mock.SetAllowed(dbus.Array([], signature="s"))
    clean_leases(env)
    owner = sleeper("root")
    setup = run_ops(env, "socket", "root", [["vm.attach", "vis-vm", "12"],
                                            ["session.start", "vis-s", "13", owner]]) or []
    check(len(setup) == 2 and all(o["ok"] for o in setup), "visibility: root's VM and session", setup)
    vm_path, s_path = PATH + "/vm/vis_2dvm", PATH + "/session/vis_2ds"
    for who in ("root", "admin", "user", "polkit"):
        ops = [["polkit", POLKIT_ACTION]] if who == "polkit" else []
        ops += [["props", "vm", "vis-vm"], ["props", "session", "vis-s"], ["get", "vm", "vis-vm", "Origin"],
                ["get", "session", "vis-s", "Events"], ["get", "session", "vis-s", "OwnerPid"], ["objects"],
                ["getplan"]]
        out = run_ops(env, "dbus", who, ops)
        if out is None:
            continue
        out = [o for o in out if o["op"][0] != "polkit"]
        if not all(o["ok"] for o in out):
            check(False, "visibility as %s: every read answered" % who, out)
            continue
        vm, sess, origin, events, owner_pid, objs, plan = (o["value"] for o in out)
        whole = who in ("root", "admin")
        label = "%s sees root's leases %s" % (who, "whole" if whole else "withheld")
        if whole:
            check(vm.get("Withheld") is False and vm["Origin"] and origin == vm["Origin"],
                  label + ": VM Origin, Withheld false", vm)
            check(sess.get("Withheld") is False and sess["OwnerPid"] == owner and owner_pid == owner
                  and [e[0] for e in sess["Events"]] == ["cycles"] and events == sess["Events"]
                  and len(sess["EventReasons"]) == 1, label + ": session OwnerPid, Events", sess)
        else:
            check(all(vm.get(k) == v for k, v in VM_WITHHELD.items()) and origin == "",
                  label + ": VM Origin \"\", Owner (0, -1), Withheld true", vm)
            check(all(sess.get(k) == v for k, v in SESSION_WITHHELD.items()) and events == [] and owner_pid == 0,
                  label + ": session Pid, OwnerPid 0, Events and EventReasons empty, Withheld true", sess)
        check(vm["Name"] == "vis-vm" and vm["GeneralCounters"] == 1 and len(vm["Routes"]) == 1
              and sess["Name"] == "vis-s" and sess["Cpus"] == "13",
              label + ": name, counters, routes and CPUs always shown", (vm, sess))
        check(objs.get(vm_path, {}).get(VM_IF) == vm and objs.get(s_path, {}).get(SESS_IF) == sess,
              label + ": GetManagedObjects says what GetAll says", {k: objs.get(k) for k in (vm_path, s_path)})
        pvm = next((v for v in plan["vms"] if v["name"] == "vis-vm"), {})
        pses = next((v for v in plan["sessions"] if v["name"] == "vis-s"), {})
        held = [h for c in plan["cpus"] for h in c["host"] if h.get("session") == "vis-s"]
        if whole:
            check("origin" in pvm and "withheld" not in pvm and pses.get("owner_pid") == owner
                  and "events" in pses and held and all(h.get("event") == "cycles" for h in held),
                  label + ": GetPlan whole", (pvm, pses, held))
        else:
            hidden = ("origin", "owner", "follows_connection", "events", "owner_pid", "uid", "pid")
            check(pvm.get("withheld") is True and pses.get("withheld") is True
                  and not [k for k in hidden if k in pvm or k in pses] and pses.get("cpus") == "13"
                  and held and all("event" not in h and h.get("withheld") and "counter" in h for h in held),
                  label + ": GetPlan without origin, owner, events, pids or uid; the counters held shown",
                  (pvm, pses, held))
    # A VM taking the counters of root's session on CPU 13 changes its
    # Events: announced as invalidated only (test_signals_withhold).
    big = sock_call(env, "vm.attach", {"name": "vis-big", "gp": 8, "vcpu_count": 1, "cpus": "13",
                                       "priority": 1000, "class": "guaranteed"})
    check("result" in big, "a VM preempts root's session", big)
    mock.SetAllowed(dbus.Array([], signature="s"))
    clean_leases(env)


def signal_props(sig):
    """The property values a signal carries: (path, {name: value}) for
    InterfacesAdded and PropertiesChanged, else None. busctl's JSON: payload
    data [path, {iface: {name: {type, data}}}] or [iface, {name: {...}}, [invalidated]]."""
    data = (sig.get("payload") or {}).get("data") or []
    if sig.get("member") == "InterfacesAdded" and len(data) >= 2:
        return data[0], {k: v for iface in data[1].values() for k, v in iface.items()}
    if sig.get("member") == "PropertiesChanged" and len(data) >= 2:
        return sig.get("path"), dict(data[1])
    return None


def test_signals_withhold(env):
    """No signal carries a property that depends on who asks: every
    listener receives InterfacesAdded and PropertiesChanged, so those
    properties are only ever invalidated (read with Get, as the reader)."""
    sigs = env.signals()
    carried = [signal_props(x) for x in sigs]
    carried = [c for c in carried if c and ("/vm/" in c[0] or "/session/" in c[0])]
    leaked = [(p, k) for p, values in carried for k in values
              if k in VM_WITHHELD and "/vm/" in p or k in SESSION_WITHHELD and "/session/" in p]
    added = [p for x in sigs if x.get("member") == "InterfacesAdded" for p in [signal_props(x)[0]]]
    check(PATH + "/vm/vis_2dvm" in added and PATH + "/session/vis_2ds" in added and carried,
          "busctl monitor saw the leases' InterfacesAdded and PropertiesChanged", added[-10:])
    check(not leaked, "no InterfacesAdded or PropertiesChanged carries Origin, Owner, Pid, OwnerPid, Events, "
          "EventReasons or Withheld (%d signals)" % len(carried), leaked[:20])
    invalidated = [x for x in sigs if x.get("member") == "PropertiesChanged" and "/session/" in x.get("path", "")
                   and "Events" in ((x.get("payload") or {}).get("data") or [None, None, []])[2]]
    check(invalidated, "a session's changed Events are announced as invalidated (read them with Get)",
          [x for x in sigs if x.get("member") == "PropertiesChanged"][-6:])


def test_polkit_hang(env, mock):
    """A caller that leaves while polkit is silent gets no lease, even when
    polkit finally says yes."""
    mgr = dbus.Interface(env.bus.get_object(NAME, PATH), MGR)
    vm_count = props(env, PATH, MGR)["VmCount"]
    left_before = open(env.vpmud_log).read().count("left the bus")
    # The mock computes its answer when asked and holds it back: yes.
    mock.SetAllowed([POLKIT_ACTION])
    mock.SimulateHang(True)
    caller = subprocess.Popen(["busctl", "--address=" + env.addr, "--timeout=120", "call", NAME, PATH, MGR,
                               "AttachVM", "sa{sv}", "orphan-vm", "1", "vcpus", "as", "1", "11"],
                              preexec_fn=identity("user"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    check(wait_until(lambda: bool(mock.HaveHangingCalls()), 10),
          "an unprivileged AttachVM waits for polkit, which hangs")
    caller.kill()
    caller.wait()
    check(wait_until(lambda: open(env.vpmud_log).read().count("left the bus") > left_before, 5),
          "vpmud sees the caller leave while polkit is silent")
    answers_before = open(env.vpmud_log).read().count(") authorized for " + POLKIT_ACTION + " (vm.attach)")
    mock.ReleaseHangingCalls()
    mock.SimulateHang(False)
    check(wait_until(lambda: open(env.vpmud_log).read().count(") authorized for " + POLKIT_ACTION + " (vm.attach)")
                     > answers_before, 5), "polkit answers yes after the caller left")
    time.sleep(0.3)
    mock.SetAllowed(dbus.Array([], signature="s"))
    check(props(env, PATH, MGR)["VmCount"] == vm_count, "no lease for the departed caller (VmCount unchanged)")
    objs = env.bus.get_object(NAME, PATH).GetManagedObjects(dbus_interface="org.freedesktop.DBus.ObjectManager")
    check(PATH + "/vm/orphan_2dvm" not in objs, "no VM object for it", list(objs))
    ls = subprocess.run([os.path.join(BUILD, "client", "vpmuctl"), "--socket", env.sock_path, "vm", "list"],
                        capture_output=True, text=True)
    check(ls.returncode == 0 and "orphan-vm" not in ls.stdout, "vpmuctl vm list does not show it", ls.stdout)
    log = open(env.vpmud_log).read()
    check("orphan-vm attached" not in log, "vpmud never attached it", log[-1500:])
    try:
        path, _ = mgr.AttachVM("orphan-vm", {"vcpus": dbus.Array(["11"], signature="s")})
        ok = path == PATH + "/vm/orphan_2dvm"
        mgr.DetachVM("orphan-vm")
    except dbus.DBusException as e:
        ok = e.get_dbus_message()
    check(ok is True, "root attaches the same name afterwards", ok)


def main():
    if os.geteuid() != 0:
        print("skip: needs root (the daemon runs as root; the test switches to user %s)" % TEST_USER)
        return 77
    for tool in ("dbus-daemon", "busctl", "runuser"):
        if not shutil.which(tool):
            print("skip: %s not found" % tool)
            return 77
    try:
        import dbusmock  # noqa: F401
    except ImportError:
        print("skip: python3-dbusmock is not installed")
        return 77
    try:
        pwd.getpwnam(TEST_USER)
    except KeyError:
        if subprocess.run(["useradd", "--system", "--no-create-home", TEST_USER]).returncode != 0:
            print("skip: cannot create user %s" % TEST_USER)
            return 77
    try:
        grp.getgrnam(ADMIN_GROUP)
    except KeyError:
        if subprocess.run(["groupadd", "--system", ADMIN_GROUP]).returncode != 0:
            print("skip: cannot create group %s" % ADMIN_GROUP)
            return 77
    if not os.path.exists(VPMUD):
        print("no %s: build first" % VPMUD)
        return 1

    env = Env()
    try:
        run(env)
    finally:
        log = env.close()
    check("Sanitizer" not in log and "vpmud stopped" in log, "vpmud stops cleanly (no sanitizer report)",
          log[-3000:])
    # The same door on this host's own flavour (--kvm auto).
    env = Env(kvm="auto")
    try:
        test_host_flavour(env)
    finally:
        log = env.close()
    check("Sanitizer" not in log and "vpmud stopped" in log, "--kvm auto: vpmud stops cleanly (no sanitizer report)",
          log[-3000:])
    return 1 if failures else 0


def test_host_flavour(env):
    """--kvm auto: the flavour this host gives guests (here: none, with
    kvm.enable_pmu=N). What the bus shows is what the socket says for the
    same daemon: the flavour, advisory routes, each vCPU's routes, the
    counts by route, the session's reasons and note."""
    mgr = dbus.Interface(env.bus.get_object(NAME, PATH), MGR)
    sb = check_flavour_props(env, "--kvm auto")
    flavour = sb.get("kvm_flavour")
    print("     (this host's vPMU flavour: %s, routes %s)" % (flavour, sb.get("kvm_routes")))
    if flavour != "extension":
        check(sb.get("kvm_routes") == "advisory" and props(env, PATH, MGR)["RoutesKind"] == 3,
              "--kvm auto on a stock kernel: routes advisory (RoutesKind 3)", sb)
    path, res = mgr.AttachVM("flav", {"gp": dbus.UInt32(2), "fixed_mask": dbus.UInt32(1),
                                      "vcpus": dbus.Array(["0-1", "2-3"], signature="s")})
    check(res["flavour"] == wire(FLAVOURS, flavour) and res["routes"] == wire(ROUTES_KINDS, sb.get("kvm_routes")),
          "AttachVM result names the flavour and whether routes hold", res)
    shown = sock_call(env, "vm.show", {"name": "flav"}).get("result", {})
    vp = props(env, path, VM_IF)
    want = [{k: vc[k] for k in ("vcpu", "cpus", "gp", "fixed")} for vc in shown.get("vcpus", [])]
    check(bus_routes(vp) == want and want, "VM Routes are the socket's vm.show routes", (bus_routes(vp), want))
    asked = [rt for vc in want for rt in vc["gp"][:2] + vc["fixed"][:1]]
    check(set(asked) <= FLAVOUR_ROUTES.get(flavour, set()) and asked and
          all(rt == "disabled" for vc in want for rt in vc["gp"][2:] + vc["fixed"][1:]),
          "the PMCs asked for have the flavour's routes (%s), the rest disabled" % "/".join(
              sorted(FLAVOUR_ROUTES.get(flavour, ()))), want)
    counts = {k: v for k, v in shown.items() if k.endswith("_vcpus")}
    if flavour != "extension":
        check({k: int(v) for k, v in vp["Granted"].items()} == counts
              and {k: int(v) for k, v in res["granted"].items()} == counts
              and sum(counts.values()) == 2,
              "Granted property and AttachVM granted are the socket's counts by route", (dict(vp["Granted"]), counts))
        check(vp["PassthroughVcpus"] == 0, "PassthroughVcpus is 0 outside the extension", vp["PassthroughVcpus"])
    plan = mgr.GetPlan({})
    pv = [v for v in plan["vms"] if v["name"] == "flav"]
    check(plan["flavour"] == wire(FLAVOURS, flavour) and plan["routes"] == wire(ROUTES_KINDS, sb.get("kvm_routes"))
          and pv and all(int(pv[0].get(k, -1)) == v for k, v in counts.items()),
          "GetPlan names the flavour; its VM carries the counts by route", (plan["flavour"], pv))

    # count_guest: refused only on the mediated vPMU, with the broker's reason.
    opts = {"cpus": "0", "count_guest": True}
    name, msg = err_name(lambda: mgr.StartSession("guest", ["cycles", "task-clock"], opts))
    if flavour == "mediated":
        check(name == ERR + "Refused" and "params.count_guest" in msg and "EBUSY" in msg,
              "mediated: count_guest refused with the broker's reason", (name, msg))
    else:
        check(name is None, "%s: StartSession with count_guest accepted" % flavour, (name, msg))
        sp = props(env, PATH + "/session/guest", SESS_IF)
        sess = [s for s in sock_call(env, "plan").get("result", {}).get("sessions", []) if s["name"] == "guest"]
        reasons = [e.get("reason", "") for e in sess[0]["events"]] if sess else None
        check(sess and list(sp["EventReasons"]) == reasons and sp["Note"] == sess[0].get("note", ""),
              "the session's EventReasons and Note are the socket's", (list(sp["EventReasons"]), sp["Note"], sess))
        rd = mgr.ReadSession("guest")
        check(rd["flavour"] == wire(FLAVOURS, flavour), "ReadSession names the flavour", rd.get("flavour"))
        mgr.StopSession("guest")
    time.sleep(0.3)
    changed = [s for s in env.signals() if s.get("member") == "PlanChanged"
               and "vm.attach flav" in json.dumps(s.get("payload"))]
    bad = [rt for s in changed for ch in s["payload"]["data"][2] for key in ("gp", "fixed")
           for rt in ch.get(key, {}).get("data", []) if (rt >= len(ROUTES) or ROUTES[rt] not in FLAVOUR_ROUTES.get(flavour, set()) | {"disabled"})]
    check(changed and not bad, "PlanChanged for the attach carries only the flavour's routes", (changed, bad))
    mgr.DetachVM("flav")


def vpmud_kvm_fds(env):
    n = 0
    for fd in os.listdir(f"/proc/{env.vpmud.pid}/fd"):
        try:
            n += os.readlink(f"/proc/{env.vpmud.pid}/fd/{fd}") == "anon_inode:kvm-vm"
        except OSError:
            pass
    return n


def fd_of(pid, fd):
    """Our own descriptor of process pid's fd (pidfd_getfd), or -1."""
    libc = ctypes.CDLL(None, use_errno=True)
    pidfd = os.pidfd_open(pid)
    try:
        return libc.syscall(438, pidfd, fd, 0)
    finally:
        os.close(pidfd)


def test_route_fd_bus(env, mgr):
    """BindVM's route_fd (h): the delegation path on the bus. The route fd
    is the VMM's VM file (what --kvm model takes for one), passed by an
    agent (dbus-python's UnixFd) that took it from the VMM."""
    count0 = props(env, PATH, MGR)["VmCount"]
    kvm0 = vpmud_kvm_fds(env)
    vmm = spawn_vmm()
    vm_fd = int(vmm.stdout.readline().split("vm_fd=")[1].split()[0])
    route = fd_of(vmm.pid, vm_fd)
    if route < 0:
        print("skip BindVM with a route fd: pidfd_getfd: " + os.strerror(ctypes.get_errno()))
        vmm.kill()
        vmm.wait()
        return
    path, _ = mgr.AttachVM("rfd-vm", {"vcpus": dbus.Array(["11"], signature="s"), "gp": dbus.UInt32(2)})
    vp = props(env, path, VM_IF)
    check(ROUTES_KINDS[vp["RoutesKind"]] == "advisory" and vp["RoutesWhy"],
          "VM RoutesKind advisory (and RoutesWhy) before its VMM hands a route fd", dict(vp))
    # wrong type, a pipe: refused, nothing changed
    try:
        mgr.BindVM("rfd-vm", dbus.UInt32(vmm.pid), {"route_fd": dbus.Int32(route)})
        check(False, "BindVM with route_fd as an integer: refused")
    except dbus.DBusException as e:
        check(e.get_dbus_name() == ERR + "InvalidParam" and "params.route_fd" in e.get_dbus_message()
              and "unix fd (h)" in e.get_dbus_message(), "BindVM route_fd must be a unix fd (h)", e.get_dbus_message())
    rd, wr = os.pipe()
    try:
        mgr.BindVM("rfd-vm", dbus.UInt32(vmm.pid), {"route_fd": dbus.types.UnixFd(wr)})
        check(False, "BindVM with a pipe as route fd: refused")
    except dbus.DBusException as e:
        check(e.get_dbus_name() == ERR + "InvalidParam" and "params.route_fd" in e.get_dbus_message(),
              "BindVM with a pipe as route fd: InvalidParam naming params.route_fd", e.get_dbus_message())
    ino = os.fstat(wr).st_ino
    os.close(rd)
    os.close(wr)
    # sd-bus drops the incoming message (and the descriptor it carries) when
    # the call is done, which may be just after the reply went out: give it
    # a moment before calling it a leak.
    def pipe_held():
        found = []
        for n in os.listdir(f"/proc/{env.vpmud.pid}/fd"):
            try:
                if os.readlink(f"/proc/{env.vpmud.pid}/fd/{n}") == f"pipe:[{ino}]":
                    found.append(n)
            except FileNotFoundError:
                pass
        return found
    deadline = time.monotonic() + 2.0
    held = pipe_held()
    while held and time.monotonic() < deadline:
        time.sleep(0.05)
        held = pipe_held()
    check(not held, "... vpmud kept no copy of it", held)
    vp = props(env, path, VM_IF)
    check(tuple(vp["Owner"]) == (0, -1) and ROUTES_KINDS[vp["RoutesKind"]] == "advisory", "... nothing changed",
          dict(vp))
    # the VMM's route fd: simulated, on the object and in every answer
    res = mgr.BindVM("rfd-vm", dbus.UInt32(vmm.pid), {"route_fd": dbus.types.UnixFd(route)})
    os.close(route)
    check(ROUTES_KINDS[res["routes"]] == "simulated" and "route fd" in res["routes_why"],
          "BindVM with the VMM's route fd (h): routes simulated", dict(res))
    vp = props(env, path, VM_IF)
    check(ROUTES_KINDS[vp["RoutesKind"]] == "simulated" and "route fd" in vp["RoutesWhy"]
          and tuple(vp["Owner"])[0] == vmm.pid, "VM RoutesKind simulated, RoutesWhy, Owner the VMM", dict(vp))
    check(vpmud_kvm_fds(env) > kvm0, "vpmud holds the route fd")
    plan = mgr.GetPlan({})
    e = next((v for v in plan["vms"] if v["name"] == "rfd-vm"), {})
    check(ROUTES_KINDS[e.get("routes", 0)] == "simulated", "GetPlan: the VM's routes simulated", e)
    st = mgr.GetStatus()
    check(int(st["vms_by_routes"]["simulated"]) >= 1 and "rfd-vm" not in list(st["advisory_vms"]),
          "GetStatus counts it simulated", st)
    time.sleep(0.3)
    check(any(x.get("member") == "PropertiesChanged" and x.get("path") == path
              and "RoutesKind" in json.dumps(x.get("payload")) and "RoutesWhy" in json.dumps(x.get("payload"))
              for x in env.signals()), "PropertiesChanged RoutesKind, RoutesWhy when the route fd came")
    # a VMM that hands none: advisory, by name in the status
    vmm2 = spawn_vmm()
    vmm2.stdout.readline()
    path2, _ = mgr.AttachVM("norfd-vm", {"vcpus": dbus.Array(["12"], signature="s"), "gp": dbus.UInt32(1)})
    res = mgr.BindVM("norfd-vm", dbus.UInt32(vmm2.pid), {})
    check(ROUTES_KINDS[res["routes"]] == "advisory" and res["routes_why"] == "the VMM handed no route fd",
          "BindVM without a route fd: advisory, the VMM handed no route fd", dict(res))
    vp = props(env, path2, VM_IF)
    check(ROUTES_KINDS[vp["RoutesKind"]] == "advisory" and vp["RoutesWhy"] == "the VMM handed no route fd",
          "its object says so", dict(vp))
    st = mgr.GetStatus()
    check("norfd-vm" in list(st["advisory_vms"]), "GetStatus names it among the advisory VMs", st)
    sock = sock_call(env, "vm.show", {"name": "norfd-vm"})["result"]
    check(sock["routes"] == "advisory" and sock["routes_why"] == vp["RoutesWhy"],
          "the socket's vm.show says the same", sock)
    # the VMMs exit: released, route fd closed
    for p in (vmm, vmm2):
        p.kill()
        p.wait()
    check(wait_until(lambda: props(env, PATH, MGR)["VmCount"] == count0), "the VMMs' exit releases their VMs")
    check(wait_until(lambda: vpmud_kvm_fds(env) == kvm0), "... and vpmud closes the route fd")


def run(env):
    mgr = dbus.Interface(env.bus.get_object(NAME, PATH), MGR)

    # ---- introspection: what ships in docs/ is what the daemon serves
    rc, out, _ = busctl(env, "introspect", "--xml-interface", NAME, PATH)
    check(rc == 0, "busctl introspect of the manager")
    live = {"Manager": out}
    rc, out, err = busctl(env, "introspect", NAME, PATH, MGR)
    check(rc == 0 and "AttachVM" in out and "PlanChanged" in out, "busctl introspect lists methods and signals", err)

    # ---- reads, manager properties
    p = props(env, PATH, MGR)
    check(p["Backend"] == 3 and not p["BackendEnforced"],
          "Backend is 3 (model), not enforced", p.get("Backend"))
    check(p["Pmu"]["model"] == "icelake-8360y" and int(p["Pmu"]["gp"]) == 8, "Pmu summary property", p["Pmu"])
    check(p["VmCount"] == 0 and p["SessionCount"] == 0, "no leases at start")
    gen0 = int(p["Generation"])
    st = mgr.GetStatus()
    check(int(st["generation"]) == gen0 and st["backends"]["kvm"] == 3, "GetStatus", st)
    pm = mgr.GetPmu()
    check(int(pm["gp"]) == 8 and int(pm["fixed_mask"]) == 0xF, "GetPmu (masks as numbers)", pm)
    check_flavour_props(env, "--kvm model")
    check(p["Flavour"] == 1 and p["RoutesKind"] == 2 and list(p["Warnings"]) == [],
          "--kvm model: Flavour 1 (extension), RoutesKind 2 (simulated), no warnings", dict(p))

    # ---- attach a VM from a long-lived agent connection
    path, res = mgr.AttachVM("web-1", {"priority": dbus.UInt32(200), "class": dbus.UInt32(CLASS_PREFERRED),
                                       "gp": dbus.UInt32(8), "fixed_mask": dbus.UInt32(0x7),
                                       "vcpus": dbus.Array(["0-1", "2-3"], signature="s")})
    check(path == PATH + "/vm/web_2d1", "AttachVM returns the escaped object path", path)
    vp = props(env, path, VM_IF)
    check(int(res["granted"]["passthrough_vcpus"]) + int(res["granted"]["multiplexed_vcpus"]) == 2
          and int(res["granted"]["passthrough_vcpus"]) == vp["PassthroughVcpus"],
          "AttachVM result (grant) agrees with the PassthroughVcpus property", res)
    check(vp["Name"] == "web-1" and vp["Class"] == CLASS_PREFERRED and vp["Priority"] == 200
          and vp["Origin"] == "dbus", "VM object properties", dict(vp))
    check(len(vp["Routes"]) == 2 and all(r == ROUTE_PASSTHROUGH for r in vp["Routes"][0][2])
          and vp["Routes"][0][1] == "0-1", "VM Routes: vCPU 0 on 0-1, all gp passthrough", vp["Routes"])
    check(tuple(vp["Owner"]) == (0, -1), "VM Owner (0,-1) when no VMM is bound", vp["Owner"])
    check(res["flavour"] == 1 and res["routes"] == 2 and set(res["granted"]) == {"passthrough_vcpus", "multiplexed_vcpus"}
          and {k: int(v) for k, v in vp["Granted"].items()} == {k: int(v) for k, v in res["granted"].items()},
          "AttachVM names the flavour; the Granted property is its grant", (res, dict(vp["Granted"])))
    shown = sock_call(env, "vm.show", {"name": "web-1"})["result"]
    check(bus_routes(vp) == [{k: vc[k] for k in ("vcpu", "cpus", "gp", "fixed")} for vc in shown["vcpus"]],
          "VM Routes are the socket's vm.show routes", (bus_routes(vp), shown["vcpus"]))
    objs = env.bus.get_object(NAME, PATH).GetManagedObjects(dbus_interface="org.freedesktop.DBus.ObjectManager")
    check(path in objs and VM_IF in objs[path], "ObjectManager lists the VM", list(objs))
    rc, out, _ = busctl(env, "introspect", "--xml-interface", NAME, path)
    live["VM"] = out

    name, _ = err_name(lambda: mgr.AttachVM("web-1", {"vcpus": dbus.Array(["0"], signature="s")}))
    check(name == ERR + "Exists", "second AttachVM of the name: Error.Exists", name)
    name, msg = err_name(lambda: mgr.AttachVM("web-x", {"prority": dbus.UInt32(1)}))
    check(name == ERR + "UnknownField" and "prority" in msg, "misspelt option: Error.UnknownField", (name, msg))
    name, _ = err_name(lambda: mgr.AttachVM("web-x", {"class": dbus.UInt32(9), "vcpus": dbus.Array(["0"], signature="s")}))
    check(name == ERR + "InvalidParam", "class 9: Error.InvalidParam", name)
    name, _ = err_name(lambda: mgr.DetachVM("nope"))
    check(name == ERR + "NotFound", "DetachVM of an unknown VM: Error.NotFound", name)
    rc, out, err = mgr_call(env, "AttachVM", "sa{sv}", "twice", 3, "priority", "u", 1, "priority", "u", 2,
                            "vcpus", "as", 1, "0")
    check(rc != 0 and "params.priority: given twice" in err, "an option given twice is refused", err)
    name, msg = err_name(lambda: mgr.AttachVM("x" * 65, {"vcpus": dbus.Array(["0"], signature="s")}))
    check(name == ERR + "InvalidParam" and "params.name" in msg, "a name over 64 bytes: Error.InvalidParam",
          (name, msg))
    name, msg = err_name(lambda: mgr.AttachVM("web-x", {"vcpus": dbus.Array(["0-999999"], signature="s")}))
    check(name == ERR + "InvalidParam" and "params.vcpus[0]" in msg, "a CPU out of range names its vCPU",
          (name, msg))
    name, msg = err_name(lambda: mgr.AttachVM("web-x", {"gp": "eight", "vcpus": dbus.Array(["0"], signature="s")}))
    check(name == ERR + "InvalidParam" and "params.gp" in msg, "a string for gp: Error.InvalidParam", (name, msg))
    # An agent's binding picks its own integer types (Python: i); the count
    # form of vCPUs works as on the socket.
    p, r = mgr.AttachVM("plain-ints", {"priority": 300, "class": "guaranteed", "gp": 1, "vcpu_count": 2,
                                       "cpus": "2-3"})
    pv = props(env, p, VM_IF)
    check(pv["Priority"] == 300 and pv["Class"] == CLASS_GUARANTEED and len(pv["Routes"]) == 2
          and pv["Routes"][1][1] == "2-3", "int options, class by name, vcpu_count + cpus", dict(pv))
    mgr.DetachVM("plain-ints")

    # ---- update: property change signals
    r = mgr.UpdateVM("web-1", {"priority": dbus.UInt32(300)})
    check(int(r["generation"]) > gen0, "UpdateVM returns a newer generation", r)
    check(props(env, path, VM_IF)["Priority"] == 300, "Priority property follows UpdateVM")

    # ---- a session that preempts the VM: routes change, properties emit
    spath, sres = mgr.StartSession("prof", ["cycles", "instructions"],
                                   {"cpus": "0-1", "priority": dbus.UInt32(900)})
    check(spath == PATH + "/session/prof", "StartSession returns the session path", spath)
    sp = props(env, spath, SESS_IF)
    check(sp["Cpus"] == "0-1" and len(sp["Events"]) == 2 and sp["Events"][0][0] == "cycles"
          and sp["Events"][0][1] in (2, 3), "Session object properties (events with placement)", dict(sp))
    rc, out, _ = busctl(env, "introspect", "--xml-interface", NAME, spath)
    live["Session"] = out
    vp2 = props(env, path, VM_IF)
    check(any(r == ROUTE_MULTIPLEXED for r in vp2["Routes"][0][2]), "the session downgrades the VM's routes",
          vp2["Routes"][0])
    rd = mgr.ReadSession("prof")
    check(len(rd["events"]) == 2 and rd["events"][0]["event"] == "cycles", "ReadSession", rd)
    check(rd["flavour"] == 1 and rd["routes"] == 2 and "model" in rd.get("note", ""),
          "ReadSession names the flavour and says what the numbers do not hold", rd)
    # count_guest, as on the socket: a boolean, granted outside the mediated vPMU.
    gpath, gres = mgr.StartSession("guest-time", ["cycles"], {"cpus": "5", "count_guest": True})
    gp = props(env, gpath, SESS_IF)
    sess = [x for x in sock_call(env, "plan")["result"]["sessions"] if x["name"] == "guest-time"]
    check(sess and gres["flavour"] == 1 and gres.get("note") == gp["Note"] == sess[0].get("note")
          and gp["Note"] != "" and list(gp["EventReasons"]) == [e.get("reason", "") for e in sess[0]["events"]]
          and len(gp["EventReasons"]) == 1,
          "StartSession with count_guest under the model: accepted; note and reasons are the socket's",
          (dict(gres), dict(gp), sess))
    mgr.StopSession("guest-time")
    name, msg = err_name(lambda: mgr.StartSession("guest-int", ["cycles"], {"cpus": "5", "count_guest": dbus.UInt32(1)}))
    check(name == ERR + "InvalidParam" and "params.count_guest" in msg, "count_guest must be a boolean", (name, msg))
    plan = mgr.GetPlan({"cpus": "0-1"})
    check(len(plan["cpus"]) == 2 and plan["vms"][0]["name"] == "web-1", "GetPlan with a CPU filter", plan.keys())
    check(plan["flavour"] == 1 and plan["routes"] == 2 and plan["sessions"][0].get("note", "") == sp["Note"] != ""
          and int(plan["vms"][0]["passthrough_vcpus"]) == props(env, path, VM_IF)["PassthroughVcpus"],
          "GetPlan names the flavour; its sessions carry their note", (plan["flavour"], plan["sessions"]))
    g = mgr.StopSession("prof")
    check(int(g) > int(r["generation"]), "StopSession returns the generation", g)
    check(wait_until(lambda: PATH + "/session/prof" not in env.bus.get_object(NAME, PATH).GetManagedObjects(
        dbus_interface="org.freedesktop.DBus.ObjectManager")), "session object gone after StopSession")
    check(all(r == ROUTE_PASSTHROUGH for r in props(env, path, VM_IF)["Routes"][0][2]),
          "VM routes back to passthrough")

    # ---- interface XML in docs/ equals what the daemon serves
    for iface, text in live.items():
        f = os.path.join(SRC, "docs", "%s.%s.xml" % (NAME, iface))
        want = interface_xml(open(f).read(), NAME + "." + iface)
        got = interface_xml(text, NAME + "." + iface)
        check(want is not None and want == got, "docs/%s.%s.xml matches the live interface" % (NAME, iface),
              "\n" + str(got))

    # ---- a client leaving the bus releases its leases
    rc, out, err = mgr_call(env, "AttachVM", "sa{sv}", "oneshot", 1, "vcpus", "as", 1, "4")
    check(rc == 0 and "/vm/oneshot" in out, "busctl AttachVM", err)
    check(wait_until(lambda: props(env, PATH, MGR)["VmCount"] == 1), "busctl left the bus: its VM is released")
    agent = subprocess.Popen([sys.executable, "-c", """
import dbus, sys, time
b = dbus.bus.BusConnection(sys.argv[1])
m = dbus.Interface(b.get_object("org.vpmu.Broker1", "/org/vpmu/Broker1"), "org.vpmu.Broker1.Manager")
m.AttachVM("agent-vm", {"vcpus": dbus.Array(["5"], signature="s"), "gp": dbus.UInt32(2)})
m.StartSession("agent-s", ["cycles"], {"cpus": "6"})
print("ready", flush=True)
time.sleep(60)
""", env.addr], stdout=subprocess.PIPE, text=True)
    line = agent.stdout.readline()
    check(line.strip() == "ready", "an agent attached a VM and started a session", line)
    p = props(env, PATH, MGR)
    check(p["VmCount"] == 2 and p["SessionCount"] == 1, "both leases exist while the agent is connected", dict(p))
    agent.kill()
    agent.wait()
    check(wait_until(lambda: props(env, PATH, MGR)["VmCount"] == 1 and props(env, PATH, MGR)["SessionCount"] == 0),
          "agent killed: its VM and session are released")

    # ---- a privileged caller ties a session to a process instead
    child = subprocess.Popen(["sleep", "60"])
    rc, out, err = mgr_call(env, "StartSession", "sasa{sv}", "owned", 1, "cycles", 2, "cpus", "s", "7",
                            "owner_pid", "i", child.pid)
    check(rc == 0, "busctl StartSession with owner_pid", err)
    time.sleep(0.2)
    check(props(env, PATH, MGR)["SessionCount"] == 1, "the session outlives busctl (owned by a process)")
    child.kill()
    child.wait()
    check(wait_until(lambda: props(env, PATH, MGR)["SessionCount"] == 0), "owner process exit stops the session")
    if os.access("/dev/kvm", os.R_OK | os.W_OK) and os.path.exists(FAKE_VMM):
        vmm = spawn_vmm()
        vm_fd = int(vmm.stdout.readline().split("vm_fd=")[1].split()[0])
        rc, out, err = mgr_call(env, "AttachVM", "sa{sv}", "vmm-vm", 2, "vcpus", "as", 1, "8",
                                "owner", "a{sv}", 2, "pid", "i", vmm.pid, "vm_fd", "i", vm_fd)
        check(rc == 0, "busctl AttachVM with a VMM owner", err)
        vmpath = PATH + "/vm/vmm_2dvm"
        check(wait_until(lambda: tuple(props(env, vmpath, VM_IF)["Owner"])[0] == vmm.pid),
              "the VMM-owned VM outlives busctl; Owner shows the VMM")
        vmm.kill()
        vmm.wait()
        check(wait_until(lambda: props(env, PATH, MGR)["VmCount"] == 1), "VMM exit releases the VM")
        # An agent attaches without an owner, then binds the lease to its
        # VMM and leaves: the bound lease follows the VMM, not the agent.
        vmm = spawn_vmm()
        vm_fd = int(vmm.stdout.readline().split("vm_fd=")[1].split()[0])
        agent = subprocess.Popen([sys.executable, "-c", """
import dbus, sys
b = dbus.bus.BusConnection(sys.argv[1])
m = dbus.Interface(b.get_object("org.vpmu.Broker1", "/org/vpmu/Broker1"), "org.vpmu.Broker1.Manager")
m.AttachVM("bound-vm", {"vcpus": dbus.Array(["9"], signature="s"), "gp": dbus.UInt32(1)})
m.BindVM("bound-vm", dbus.UInt32(int(sys.argv[2])), {"vm_fd": dbus.Int32(int(sys.argv[3]))})
print("bound", flush=True)
""", env.addr, str(vmm.pid), str(vm_fd)], stdout=subprocess.PIPE, text=True)
        line = agent.stdout.readline()
        agent.wait()
        check(line.strip() == "bound", "an agent attached and bound a VM, then left", line)
        time.sleep(0.3)
        check(props(env, PATH, MGR)["VmCount"] == 2, "the bound VM outlives the agent's connection")
        vmm.kill()
        vmm.wait()
        check(wait_until(lambda: props(env, PATH, MGR)["VmCount"] == 1), "its VMM's exit releases it")
        # A lease bound through another door (the socket, as the libvirt
        # hook does) shows its Owner on the bus too.
        vmm = spawn_vmm()
        vm_fd = int(vmm.stdout.readline().split("vm_fd=")[1].split()[0])
        ctl = [os.path.join(BUILD, "client", "vpmuctl"), "--socket", env.sock_path]
        a = subprocess.run(ctl + ["vm", "attach", "sock-bound", "--gp", "1", "--vcpus", "1", "--cpus", "10"],
                           capture_output=True, text=True)
        check(a.returncode == 0, "vm attach over the socket", a.stderr)
        b = subprocess.run(ctl + ["vm", "bind", "sock-bound", "--pid", str(vmm.pid), "--vm-fd", str(vm_fd)],
                           capture_output=True, text=True)
        check(b.returncode == 0, "vm bind over the socket", b.stderr)
        sbpath = PATH + "/vm/sock_2dbound"
        check(wait_until(lambda: tuple(props(env, sbpath, VM_IF)["Owner"])[0] == vmm.pid),
              "D-Bus Owner follows a bind made through the socket")
        vmm.kill()
        vmm.wait()
        check(wait_until(lambda: props(env, PATH, MGR)["VmCount"] == 1), "and its VMM's exit releases it")
        test_route_fd_bus(env, mgr)
    else:
        print("skip VMM-owned lease: no /dev/kvm or vpmu-fake-vmm")

    # ---- non-root: reads pass, changes need polkit
    rc, out, err = busctl(env, "get-property", NAME, PATH, MGR, "VmCount", user=TEST_USER)
    check(rc == 0 and json.loads(out)["data"] == 1, "non-root reads a property", (out, err))
    rc, out, err = mgr_call(env, "GetStatus", "", user=TEST_USER)
    check(rc == 0, "non-root calls GetStatus", err)
    rc, out, err = mgr_call(env, "AttachVM", "sa{sv}", "user-vm", 1, "vcpus", "as", 1, "9", user=TEST_USER)
    check(rc != 0 and "vm.attach" in err and POLKIT_ACTION in err,
          "non-root AttachVM refused without polkit, the refusal names what the bus accepts", (rc, out, err))
    out = run_ops(env, "dbus", "admin", [["vm.attach", "group-vm", "9"], ["vm.list"], ["vm.detach", "group-vm"]])
    check(out is not None and all(o["ok"] for o in out),
          "a member of the admin group changes leases on the bus without polkit", out)
    rc, out, err = mgr_call(env, "DetachVM", "s", "web-1", user=TEST_USER)
    check(rc != 0 and props(env, PATH, MGR)["VmCount"] == 1, "non-root DetachVM refused without polkit", err)
    p = subprocess.run(["runuser", "-u", TEST_USER, "--", sys.executable, "-c", """
import dbus, sys
m = dbus.Interface(dbus.bus.BusConnection(sys.argv[1]).get_object("org.vpmu.Broker1", "/org/vpmu/Broker1"),
                   "org.vpmu.Broker1.Manager")
try:
    m.AttachVM("user-vm2", {"vcpus": dbus.Array(["9"], signature="s")})
except dbus.DBusException as e:
    print(e.get_dbus_name())
""", env.addr], capture_output=True, text=True, timeout=20)
    check(p.stdout.strip() == ERR + "PermissionDenied",
          "non-root AttachVM without polkit: Error.PermissionDenied", (p.stdout, p.stderr))

    mock = env.start_polkit_mock()
    rc, out, err = mgr_call(env, "AttachVM", "sa{sv}", "user-vm", 1, "vcpus", "as", 1, "9", user=TEST_USER)
    check(rc != 0, "polkit mock denying: non-root AttachVM refused", (rc, out))
    mock.SetAllowed(["org.vpmu.broker1.manage"])
    rc, out, err = mgr_call(env, "AttachVM", "sa{sv}", "user-vm", 1, "vcpus", "as", 1, "9", user=TEST_USER)
    check(rc == 0 and "/vm/user_2dvm" in out, "polkit mock allowing: non-root AttachVM accepted", err)
    check(wait_until(lambda: props(env, PATH, MGR)["VmCount"] == 1), "the non-root caller's lease left with it")
    mock.SetAllowed(dbus.Array([], signature="s"))
    rc, out, err = mgr_call(env, "DetachVM", "s", "web-1", user=TEST_USER)
    check(rc != 0 and props(env, PATH, MGR)["VmCount"] == 1, "polkit mock denying again: DetachVM refused", err)

    check(int(mgr.DetachVM("web-1")) > 0 and props(env, PATH, MGR)["VmCount"] == 0, "root DetachVM")

    test_polkit_hang(env, mock)
    test_rights(env, mock)
    test_visibility(env, mock)
    test_signals_withhold(env)

    # ---- signals seen by busctl monitor
    time.sleep(0.3)
    sigs = env.signals()
    def seen(pred):
        return any(pred(s) for s in sigs)
    check(seen(lambda s: s.get("member") == "PlanChanged" and "vm.attach web-1" in json.dumps(s.get("payload"))),
          "PlanChanged for vm.attach web-1 (busctl monitor)")
    check(seen(lambda s: s.get("member") == "PlanChanged" and "vm released agent-vm" in json.dumps(s.get("payload"))),
          "PlanChanged for the agent's released VM")
    check(seen(lambda s: s.get("member") == "PropertiesChanged" and s.get("path") == path
               and "Routes" in json.dumps(s.get("payload"))), "PropertiesChanged Routes on the VM object")
    check(seen(lambda s: s.get("member") == "PropertiesChanged" and s.get("path") == path
               and "Priority" in json.dumps(s.get("payload"))), "PropertiesChanged Priority on the VM object")
    check(seen(lambda s: s.get("member") == "PropertiesChanged" and s.get("path") == PATH
               and "Generation" in json.dumps(s.get("payload"))), "PropertiesChanged Generation on the manager")
    # Another lease's change moves web-1's routes: its object signals with
    # that change (before the change's PlanChanged, after the one before).
    def with_change(reason, pred):
        plan = [i for i, x in enumerate(sigs) if x.get("member") == "PlanChanged"]
        at = [i for i in plan if reason in json.dumps(sigs[i].get("payload"))]
        if not at:
            return False
        before = max([i for i in plan if i < at[0]], default=-1)
        return any(pred(x) for x in sigs[before + 1:at[0]])
    def routes_of(p):
        return lambda x: (x.get("member") == "PropertiesChanged" and x.get("path") == p
                          and "Routes" in json.dumps(x.get("payload")))
    check(with_change("session.start prof", routes_of(path)),
          "the session preempting web-1: PropertiesChanged Routes on web-1 with that change")
    check(with_change("session stopped prof", routes_of(path)),
          "the session stopping gives web-1 its counters back: PropertiesChanged Routes on web-1")
    check(seen(lambda s: s.get("member") == "InterfacesAdded" and "/session/prof" in json.dumps(s.get("payload"))),
          "InterfacesAdded for the session")
    check(seen(lambda s: s.get("member") == "InterfacesRemoved" and "/vm/agent_2dvm" in json.dumps(s.get("payload"))),
          "InterfacesRemoved for the agent's VM")
    log = open(env.vpmud_log).read()
    check("left the bus" in log, "the daemon logs why a D-Bus lease went")
    check(env.vpmud.poll() is None, "vpmud still running", log[-2000:])


if __name__ == "__main__":
    sys.exit(main())
