"""Drives one etcd v3 server's JSON gateway with etcd3gw (over HTTP/1.1 with requests) and
prints a transcript that must be the same for the reference etcd and for Ballast
(conformance/tests/clients.rs compares them and checks them against the expected one).

Usage: etcd3gw_transcript.py HOST PORT

The client discovers the API path from /version. Lease ids are printed as L1, L2, ...; each
step runs under a watchdog that ends the process with exit code 3 when it takes longer than
STEP_TIMEOUT seconds.
"""

import os
import queue
import sys
import threading

import etcd3gw
from etcd3gw import exceptions

from transcript import lease_name, out, s, start_watchdog, step

CALL_TIMEOUT = 10
EVENT_WAIT = 5.0


def meta(m):
    return (
        f"key={s(m['key'])} create={m.get('create_revision')} "
        f"mod={m.get('mod_revision')} version={m.get('version')} lease={lease_name(m.get('lease', 0))}"
    )


def attempt(label, fn):
    try:
        out(f"{label}: {fn()}")
    except exceptions.Etcd3Exception as exc:
        out(f"{label}: error {type(exc).__name__} {exc.detail_text if hasattr(exc, 'detail_text') else exc}")


def event_line(ev):
    kv = ev["kv"]
    prev = f" prev={s(etcd3gw.utils._decode(ev['prev_kv']['value']))}" if "prev_kv" in ev else ""
    return (
        f"event {ev.get('type', 'PUT')} key={s(kv['key'])} value={s(kv.get('value', ''))} "
        f"mod={kv.get('mod_revision')} version={kv.get('version')}{prev}"
    )


def main():
    host, port = sys.argv[1], int(sys.argv[2])
    start_watchdog()
    c = etcd3gw.client(host=host, port=port, timeout=CALL_TIMEOUT)

    step("discovery and status")
    out(f"api path: {c.api_path}")
    st = c.status()
    out(f"status: version={st['version']} leader_is_member={st['leader'] == st['header']['member_id']}")
    members = c.members()
    out(f"members: {len(members)} name={members[0]['name']}")

    step("put and get")
    out(f"put /g/a: {c.put('/g/a', 'v1')}")
    out(f"put /g/a again: {c.put('/g/a', 'v2')}")
    out(f"get /g/a: {c.get('/g/a')}")
    for value, m in c.get("/g/a", metadata=True):
        out(f"get /g/a metadata: {s(value)} {meta(m)}")
    out(f"get /g/missing: {c.get('/g/missing')}")
    out(f"create /g/a: {c.create('/g/a', 'x')} create /g/b: {c.create('/g/b', 'b1')}")
    out(f"replace /g/b b1->b2: {c.replace('/g/b', 'b1', 'b2')} b1->b3: {c.replace('/g/b', 'b1', 'b3')}")
    for i, v in [(1, "z"), (2, "y"), (3, "x")]:
        c.put(f"/g/p/{i}", v)
    out("get_prefix /g/p/ by value: " + " ".join(f"{meta(m)}={s(v)}" for v, m in c.get_prefix("/g/p/", sort_order="ascend", sort_target="value")))
    out("get_all: " + " ".join(meta(m) for _, m in c.get_all()))
    out(f"delete /g/b: {c.delete('/g/b')} again: {c.delete('/g/b')}")
    out(f"delete_prefix /g/p/: {c.delete_prefix('/g/p/')} after: {c.get_prefix('/g/p/')}")
    txn = c.transaction({
        "compare": [{"key": etcd3gw.utils._encode("/g/a"), "result": "EQUAL", "target": "VALUE", "value": etcd3gw.utils._encode("v2")}],
        "success": [{"request_put": {"key": etcd3gw.utils._encode("/g/t"), "value": etcd3gw.utils._encode("yes")}}],
        "failure": [],
    })
    out(f"txn value==v2: succeeded={txn.get('succeeded')} responses={[list(r) for r in txn['responses']]} revision={txn['header']['revision']}")
    attempt("put an empty key", lambda: c.put("", "x"))

    step("watch")
    # The client creates its watch stream in the background: watching from the next revision
    # makes the events below arrive however late the stream is set up.
    next_rev = int(c.status()["header"]["revision"]) + 1
    events, cancel = c.watch("/g/w", prev_kv=True, start_revision=next_rev)
    got = queue.Queue()
    threading.Thread(target=lambda: [got.put(e) for e in events], daemon=True).start()
    c.put("/g/w", "w1")
    c.put("/g/w", "w2")
    c.delete("/g/w")
    for _ in range(3):
        out(event_line(got.get(timeout=EVENT_WAIT)))
    cancel()
    events, cancel = c.watch_prefix("/g/wp/", start_revision=1)
    c.put("/g/wp/1", "a")
    out("prefix " + event_line(next(events)))
    cancel()

    step("leases")
    lease = c.lease(ttl=30)
    out(f"lease: {lease_name(lease.id)}")
    c.put("/g/l/1", "leased", lease=lease)
    out(f"ttl in (25, 30]: {25 < lease.ttl() <= 30}")
    out(f"refresh: {lease.refresh()}")
    out(f"keys: {sorted(s(k) for k in lease.keys())}")
    out(f"revoke: {lease.revoke()} get /g/l/1: {c.get('/g/l/1')}")
    attempt("ttl of the revoked lease", lease.ttl)

    step("lock")
    a = c.lock("gw-lock", ttl=20)
    b = c.lock("gw-lock", ttl=20)
    out(f"a acquire: {a.acquire()} b acquire: {b.acquire()} a is_acquired: {a.is_acquired()}")
    out(f"a release: {a.release()} b acquire: {b.acquire()} b release: {b.release()}")

    step("close")
    out("done")
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
