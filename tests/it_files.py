#!/usr/bin/env python3
"""Issue 14 (points 5 and 6) against a running vpmud: see it_files.sh."""
import json
import os
import re
import signal
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import it_daemon  # noqa: E402
from it_daemon import Client, Daemon, attach_params, check, wait_until  # noqa: E402

# Every reloadable key away from its default, so that "no change" after a
# restore proves each one was kept through the failed reloads.
GOOD_CONF = ("default_priority = 300\ndefault_class = guaranteed\nmax_clients = 100\n"
             "max_clients_per_uid = 10\nadmin_reserved_clients = 20\nfirst_frame_timeout = 7\n"
             "idle_timeout = 33\n")
RAW = re.compile(rb"[\x00-\x08\x0b-\x1f\x7f-\xff]")


def log_bytes(d):
    with open(d.log.name, "rb") as f:
        return f.read()


def reload_and_wait(d, mark, timeout=3):
    """SIGHUP, then the log past `mark` once the reload was answered."""
    d.p.send_signal(signal.SIGHUP)
    got = wait_until(lambda: b"config reload" in log_bytes(d)[mark:], timeout)
    return got, log_bytes(d)[mark:]


def replace(path, make):
    if os.path.isdir(path) and not os.path.islink(path):
        os.rmdir(path)
    elif os.path.lexists(path):
        os.unlink(path)
    make(path)


def write(content):
    def make(p):
        with open(p, "wb") as f:
            f.write(content)
    return make


def test_config(tmp):
    conf = os.path.join(tmp, "vpmud.conf")
    with open(conf, "w") as f:
        f.write(GOOD_CONF)
    d = Daemon(tmp)
    d.start()
    try:
        # A FIFO: SIGHUP must not freeze (a blocking open waits for a writer).
        replace(conf, os.mkfifo)
        mark = len(log_bytes(d))
        got, log = reload_and_wait(d, mark)
        text = log.decode(errors="replace")
        check(got is not None and f"{conf}: not a regular file (a FIFO)" in text and "reload refused" in text,
              "a FIFO config is refused at SIGHUP, named with its type", text[-300:])
        t0 = time.time()
        r = Client(d.sock).call("status")
        check("result" in r and time.time() - t0 < 1, "vpmud answers after a SIGHUP on a FIFO config", r)

        replace(conf, os.mkdir)
        mark = len(log_bytes(d))
        got, log = reload_and_wait(d, mark)
        text = log.decode(errors="replace")
        check(got is not None and f"{conf}: not a regular file (a directory)" in text,
              "a directory config is refused by name", text[-300:])

        # Binary: the refusal names the byte, and the log holds no raw byte.
        replace(conf, write(b"\x7fELF\x02\x01\x1b[2J\x00\xff\xfe = 1\ndefault_priority = 5\n"))
        mark = len(log_bytes(d))
        got, log = reload_and_wait(d, mark)
        check(got is not None and b"byte 0x7F at column 1 is not text" in log, "a binary config is refused",
              log[-300:])
        check(not RAW.search(log), "no raw byte of a binary config reaches the log", log[-300:])
        # a NUL must not end the line early (it would take "5")
        replace(conf, write(b"default_priority = 5\x00\x1b]0;x\x07\n"))
        mark = len(log_bytes(d))
        got, log = reload_and_wait(d, mark)
        check(got is not None and b"byte 0x00 at column 21" in log and not RAW.search(log),
              "a NUL in a line is refused, escaped", log[-300:])
        # a control byte inside a value: refused by line, escaped
        replace(conf, write(b"state_dir = /var/lib/x\x1bx\n"))
        mark = len(log_bytes(d))
        got, log = reload_and_wait(d, mark)
        check(got is not None and b"byte 0x1B at column 23" in log and not RAW.search(log),
              "a value with a control byte is refused, escaped", log[-300:])

        # Every key of a file applies or none: a bad last line keeps all.
        replace(conf, write(b"default_priority = 1\ndefault_class = shared\nmax_clients = 50\n"
                            b"idle_timeout = 9\nfirst_frame_timeout = never\n"))
        mark = len(log_bytes(d))
        got, log = reload_and_wait(d, mark)
        check(got is not None and b"first_frame_timeout" in log and b"reload refused" in log,
              "a reload with a bad last line is refused", log[-300:])

        c = Client(d.sock)
        c.call("vm.attach", attach_params("dflt"))
        v = c.call("vm.show", {"name": "dflt"}).get("result", {})
        check(v.get("priority") == 300 and v.get("class") == "guaranteed",
              "after five failed reloads new leases still get the running default priority and class", v)
        c.call("vm.detach", {"name": "dflt"})

        replace(conf, write(GOOD_CONF.encode()))
        mark = len(log_bytes(d))
        got, log = reload_and_wait(d, mark)
        text = log.decode(errors="replace")
        check(got is not None and "applied nothing (no change)" in text,
              "the original file reloads as no change: every running setting was kept", text[-300:])
    finally:
        rc = d.stop()
    check(rc == 0, "clean exit on SIGTERM", rc)


def entry(name, uid=0, **extra):
    e = {"request": {"method": "vm.attach", "params": attach_params(name)}, "uid": uid, "origin": "vpmuctl"}
    e.update(extra)
    return e


def start_within(d, what, timeout=10):
    t0 = time.time()
    try:
        d.start(timeout=timeout)
        ok = True
    except RuntimeError:
        ok = False
    check(ok, f"vpmud starts with {what}", f"{time.time() - t0:.1f}s")
    return ok


def stop_within(d, what):
    try:
        rc = d.stop()
    except Exception as e:  # noqa: BLE001 - a hang shows as a timeout
        d.p.kill()
        rc = repr(e)
    check(rc == 0, f"SIGTERM stops vpmud {what}", rc)


def vms(d):
    return sorted(v["name"] for v in Client(d.sock).call("vm.list")["result"]["vms"])


def rejected_files(state):
    rdir = os.path.join(state, "rejected")
    return {n: open(os.path.join(rdir, n), "rb").read() if os.path.isfile(os.path.join(rdir, n)) else None
            for n in os.listdir(rdir)} if os.path.isdir(rdir) else {}


def test_state_fifos(tmp):
    d = Daemon(tmp)
    os.makedirs(d.state)
    os.mkfifo(os.path.join(d.state, "state.json"))
    if start_within(d, "a FIFO as its legacy state.json"):
        log = d.logtext()
        check(f"{d.state}/state.json could not be migrated (not a regular file (a FIFO))" in log,
              "the FIFO state.json is named with its type", log[-400:])
        check(any(n.startswith("state.json.") for n in rejected_files(d.state)), "and moved aside into rejected/")
    stop_within(d, "after a FIFO state.json")
    os.mkfifo(os.path.join(d.state, "leases", "vm-pipe.json"))
    if start_within(d, "a FIFO as a lease file"):
        log = d.logtext()
        check(f"{d.state}/leases/vm-pipe.json: not a regular file (a FIFO); moved aside to " in log,
              "the FIFO lease file is named with its type", log[-400:])
    stop_within(d, "after a FIFO lease file")


def test_legacy_kept(tmp):
    d = Daemon(tmp)
    os.makedirs(d.state)
    doc = {"format": 1,
           "vms": [entry("good"), entry("big", uid=2 ** 40), 7, entry("good", origin="libvirt"),
                   entry("badname")],
           "sessions": {"not": "a list"}}
    doc["vms"][4]["request"]["params"]["name"] = "../evil"
    raw = json.dumps(doc).encode() + b"\n"
    with open(os.path.join(d.state, "state.json"), "wb") as f:
        f.write(raw)
    if not start_within(d, "a format 1 state.json partly unusable"):
        return
    try:
        log = d.logtext()
        kept = [n for n in os.listdir(d.state) if n.startswith("state.json.migrated-")]
        check(len(kept) == 1 and open(os.path.join(d.state, kept[0]), "rb").read() == raw,
              "the old file is kept byte for byte beside the state", kept)
        for what, why in (("vms[2]", "not a lease"), ("vms[3]", "a second vm lease named good"),
                          ("vms[4]", "is not a lease name"), ("sessions", "not a list of leases (object)")):
            check(f"state.json, {what}: " in log and why in log, f"the log names {what}: {why}", log[-900:])
        check(re.search(r"vm big: \"uid\" must be an integer 0\.\.4294967294 \(a uid_t\), got 1099511627776; "
                        r"moved aside to \S+/rejected/vm-big\.json\.", log) is not None,
              "a uid of 2^40 is refused, never restored as uid 0, and moved aside", log[-900:])
        check(vms(d) == ["good"], "only the usable lease is restored", vms(d))
    finally:
        stop_within(d, "after the migration")


def test_invalid_leases_moved_aside(tmp):
    d = Daemon(tmp)
    leases = os.path.join(d.state, "leases")
    os.makedirs(leases)
    good = dict(entry("ok"), seq=1)
    cases = {
        "vm-json.json": b"{\"seq\":1,",
        "vm-uid.json": json.dumps(dict(entry("uid", uid=2 ** 40), seq=2)).encode(),
        "vm-uidmax.json": json.dumps(dict(entry("uidmax", uid=2 ** 32 - 1), seq=3)).encode(),
        "vm-seq.json": json.dumps(dict(entry("seq"), seq=0)).encode(),
        "vm-seqbig.json": json.dumps(dict(entry("seqbig"), seq=2 ** 64)).encode(),
        "vm-start.json": json.dumps(dict(entry("start"), seq=4, owner_start=-1)).encode(),
        "vm-extra.json": json.dumps(dict(entry("extra"), seq=5, note="kept")).encode(),
        "vm-origin.json": json.dumps(dict(entry("origin"), seq=6, origin="a\x1b[2J")).encode(),
        "vm-prio.json": json.dumps(dict(entry("prio"), seq=7)).encode().replace(b'"gp"', b'"priority":4294967297,"gp"'),
        "vm-pid.json": json.dumps(dict(entry("pid"), seq=8)).encode().replace(
            b'"gp"', b'"owner":{"pid":2147483648,"vm_fd":3},"gp"'),
        "vm-other.json": json.dumps(dict(entry("someone"), seq=9)).encode(),
        "session-kind.json": json.dumps(dict(entry("kind"), seq=10)).encode(),
        "vm-bin.json": b"\x00\x1b[31m\xff",
        "junk\x1b[1m.txt": b"x",
        ".vm-torn.json.tmp": b"{",
    }
    for name, content in cases.items():
        with open(os.path.join(leases, name), "wb") as f:
            f.write(content)
    with open(os.path.join(leases, "vm-ok.json"), "w") as f:
        json.dump(good, f)
    if not start_within(d, "every kind of invalid lease file"):
        return
    try:
        log = log_bytes(d)
        check(not RAW.search(log), "no raw byte of a lease file reaches the log", RAW.findall(log)[:5])
        check(vms(d) == ["ok"], "only the valid lease is restored", vms(d))
        moved = rejected_files(d.state)
        for name, content in cases.items():
            copies = [n for n in moved if n.startswith(name + ".")]
            check(len(copies) == 1 and moved[copies[0]] == content,
                  f"{name!r} is moved aside into rejected/ byte for byte", copies)
        check(os.listdir(leases) == ["vm-ok.json"], "nothing else is left in leases/", os.listdir(leases))
        text = log.decode()
        for name in cases:
            if name.endswith(".json") and not name.startswith("."):
                n = name.split("-", 1)[1][:-5]
                check(f" {n}: " in text or f"{name}: " in text, f"the log names {name}", text[-300:])
    finally:
        stop_within(d, "after the rejects")


def sub(tmp, name):
    p = os.path.join(tmp, name)
    os.makedirs(p)
    return p


def main():
    tmp = tempfile.mkdtemp(prefix="vpmu-it-files-")
    test_config(sub(tmp, "config"))
    test_state_fifos(sub(tmp, "fifos"))
    test_legacy_kept(sub(tmp, "legacy"))
    test_invalid_leases_moved_aside(sub(tmp, "leases"))
    print("logs in", tmp)
    sys.exit(1 if it_daemon.failures else 0)


if __name__ == "__main__":
    main()
