"""Drives one etcd v3 server with python-etcd3 (the `etcd3` package, over grpcio) and prints a
transcript, one line per observation, that must be the same for the reference etcd and for
Ballast (conformance/tests/clients.rs compares them and checks them against the expected one).

Usage: etcd3_transcript.py HOST PORT

Everything printed is deterministic on a fresh single-member server: revisions are printed as
they are (keys here all live outside /registry/, so they are etcd's with any shard count); lease
ids and member ids, which the server generates, are printed as L1, L2, ... and "self"; ports as
PORT; TTLs as a range check. Each step runs under a watchdog: a step that takes longer than
STEP_TIMEOUT seconds ends the process with exit code 3 and a line saying which step hung.
"""

import os
import queue
from concurrent.futures import ThreadPoolExecutor
import sys
import threading
import time

import grpc
import etcd3
import etcd3.exceptions
from etcd3 import etcdrpc, events

from transcript import lease_name, out, s, start_watchdog, step

# A gRPC deadline on every unary call the client makes (sent as grpc-timeout).
CALL_TIMEOUT = 10
# How long to wait for a watch event that must come, and for one that must not.
EVENT_WAIT = 5.0
QUIET_WAIT = 0.5


def meta(m):
    return (
        f"key={s(m.key)} create={m.create_revision} mod={m.mod_revision} "
        f"version={m.version} lease={lease_name(getattr(m, 'lease_id', None) or getattr(m, 'lease', 0))}"
    )


def kv_line(value, m):
    return f"{meta(m)} value={s(value)}"


def error_line(exc):
    """The client's exception class, and the gRPC code and message behind it."""
    rpc = exc if isinstance(exc, grpc.RpcError) else exc.__context__
    if isinstance(rpc, grpc.RpcError) and hasattr(rpc, "code"):
        return f"error {type(exc).__name__} {rpc.code().name} {rpc.details()}"
    return f"error {type(exc).__name__} {exc}"


def attempt(label, fn):
    try:
        out(f"{label}: {fn()}")
    except (grpc.RpcError, etcd3.exceptions.Etcd3Exception) as exc:
        out(f"{label}: {error_line(exc)}")


def port_free(url):
    host, _, _ = url.rpartition(":")
    return f"{host}:PORT"


def event_line(ev):
    kind = "put" if isinstance(ev, events.PutEvent) else "delete"
    prev = ""
    if ev._event.HasField("prev_kv"):
        prev = f" prev={s(ev._event.prev_kv.value)}"
    return (
        f"event {kind} key={s(ev.key)} value={s(ev.value)} mod={ev.mod_revision} "
        f"version={ev.version}{prev}"
    )


class Collector:
    """A watch callback that queues what it receives."""

    def __init__(self):
        self.q = queue.Queue()

    def __call__(self, resp):
        self.q.put(resp)

    def events(self, n):
        """The next n events (each response may carry several)."""
        got = []
        while len(got) < n:
            resp = self.q.get(timeout=EVENT_WAIT)
            if isinstance(resp, Exception):
                return got + [resp]
            got.extend(resp.events)
        return got

    def quiet(self):
        try:
            resp = self.q.get(timeout=QUIET_WAIT)
        except queue.Empty:
            return "nothing"
        return f"unexpected {resp!r}"


def main():
    host, port = sys.argv[1], int(sys.argv[2])
    start_watchdog()
    c = etcd3.client(host=host, port=port, timeout=CALL_TIMEOUT)

    step("put and get")
    r = c.put("/t/a", "v1")
    out(f"put /t/a v1: revision={r.header.revision}")
    r = c.put("/t/a", "v2", prev_kv=True)
    out(f"put /t/a v2 prev_kv: revision={r.header.revision} prev={kv_line(r.prev_kv.value, r.prev_kv)}")
    value, m = c.get("/t/a")
    out(f"get /t/a: {kv_line(value, m)} header={m.response_header.revision}")
    value, m = c.get("/t/missing")
    out(f"get /t/missing: value={value} meta={m}")
    out(f"put_if_not_exists /t/a: {c.put_if_not_exists('/t/a', 'x')}")
    out(f"put_if_not_exists /t/b: {c.put_if_not_exists('/t/b', 'b1')}")
    out(f"replace /t/b b1->b2: {c.replace('/t/b', 'b1', 'b2')}")
    out(f"replace /t/b b1->b3: {c.replace('/t/b', 'b1', 'b3')}")
    value, m = c.get("/t/b", serializable=True)
    out(f"get /t/b serializable: {kv_line(value, m)}")
    c.put("/t/bin", b"\x00\xff\x01")
    value, _ = c.get("/t/bin")
    out(f"get /t/bin: {value!r}")

    step("prefix, range and sort")
    for i, v in [(1, "c"), (2, "a"), (3, "b")]:
        c.put(f"/t/p/{i}", v)
    c.put("/t/p/2", "a2")
    for order, target in [
        ("ascend", "key"),
        ("descend", "key"),
        ("ascend", "value"),
        ("descend", "version"),
        ("descend", "create"),
        ("ascend", "mod"),
    ]:
        got = c.get_prefix("/t/p/", sort_order=order, sort_target=target)
        out(f"get_prefix /t/p/ {order} {target}: " + " ".join(f"{s(m.key)}={s(v)}" for v, m in got))
    got = c.get_prefix("/t/p/", keys_only=True)
    out("get_prefix keys_only: " + " ".join(f"{s(m.key)}={s(v)!r}" for v, m in got))
    got = c.get_range("/t/p/1", "/t/p/3")
    out("get_range [/t/p/1, /t/p/3): " + " ".join(f"{s(m.key)}={s(v)}" for v, m in got))
    got = c.get_all(keys_only=True)
    out("get_all: " + " ".join(s(m.key) for _, m in got))

    step("delete")
    r = c.delete("/t/b", prev_kv=True, return_response=True)
    out(f"delete /t/b prev_kv: deleted={r.deleted} prev={[kv_line(kv.value, kv) for kv in r.prev_kvs]} revision={r.header.revision}")
    out(f"delete /t/b again: {c.delete('/t/b')}")
    out(f"delete /t/bin: {c.delete('/t/bin')}")
    r = c.delete_prefix("/t/p/")
    out(f"delete_prefix /t/p/: deleted={r.deleted} revision={r.header.revision}")
    out(f"get_prefix /t/p/ after: {list(c.get_prefix('/t/p/'))}")

    step("transactions")
    t = c.transactions
    c.put("/t/tx", "one")
    value, m = c.get("/t/tx")
    ok, resps = c.transaction(
        compare=[t.version("/t/tx") == 1, t.value("/t/tx") == "one", t.mod("/t/tx") == m.mod_revision],
        success=[t.put("/t/tx", "two", prev_kv=True), t.get("/t/tx"), t.put("/t/tx2", "x")],
        failure=[t.put("/t/tx", "failed")],
    )
    out(f"txn version==1 value==one mod=={m.mod_revision}: succeeded={ok}")
    for r in resps:
        if isinstance(r, list):
            out("  range " + " ".join(kv_line(v, mm) for v, mm in r))
        else:
            which = r.WhichOneof("response")
            body = getattr(r, which)
            out(f"  {which} revision={body.header.revision}" + (f" prev={s(body.prev_kv.value)}" if which == "response_put" and body.HasField("prev_kv") else ""))
    ok, resps = c.transaction(
        compare=[t.value("/t/tx") == "one", t.create("/t/tx") > 0],
        success=[t.put("/t/tx", "never")],
        failure=[t.get("/t/tx"), t.delete("/t/tx2", prev_kv=True)],
    )
    out(f"txn value==one (false): succeeded={ok}")
    for r in resps:
        if isinstance(r, list):
            out("  range " + " ".join(kv_line(v, mm) for v, mm in r))
        else:
            which = r.WhichOneof("response")
            body = getattr(r, which)
            out(f"  {which} deleted={body.deleted} prev={[s(kv.value) for kv in body.prev_kvs]} revision={body.header.revision}")
    ok, resps = c.transaction(
        compare=[t.version("/t/none") == 0, t.mod("/t/tx") < 1000, t.value("/t/tx") != "one"],
        success=[t.txn(compare=[t.value("/t/tx") == "two"], success=[t.put("/t/nested", "yes")], failure=[])],
        failure=[],
    )
    out(f"txn nested: succeeded={ok} inner_succeeded={resps[0].response_txn.succeeded}")
    value, m = c.get("/t/nested")
    out(f"get /t/nested: {kv_line(value, m)}")
    attempt("txn with a duplicate key", lambda: c.transaction(compare=[], success=[t.put("/t/d", "1"), t.put("/t/d", "2")], failure=[]))

    step("watch a key")
    w = Collector()
    wid = c.add_watch_callback("/t/w", w, prev_kv=True)
    c.put("/t/w", "w1")
    c.put("/t/w/under", "not this key")
    c.put("/t/w", "w2")
    c.delete("/t/w")
    for ev in w.events(3):
        out(event_line(ev) if not isinstance(ev, Exception) else f"watch error {ev!r}")
    c.cancel_watch(wid)
    c.put("/t/w", "after cancel")
    out(f"after cancel: {w.quiet()}")

    step("watch a prefix")
    w = Collector()
    wid = c.add_watch_prefix_callback("/t/wp/", w)
    c.put("/t/wp/1", "a")
    c.put("/t/wpx", "outside")
    c.put("/t/wp/2", "b")
    c.delete_prefix("/t/wp/")
    for ev in w.events(4):
        out(event_line(ev) if not isinstance(ev, Exception) else f"watch error {ev!r}")
    c.cancel_watch(wid)
    c.put("/t/wp/3", "after cancel")
    out(f"after cancel: {w.quiet()}")

    step("watch from history, and the iterator form")
    events_iter, cancel = c.watch("/t/a", start_revision=1)
    got = [next(events_iter), next(events_iter)]
    for ev in got:
        out("history " + event_line(ev))
    cancel()
    try:
        c.watch_once("/t/quiet", timeout=QUIET_WAIT)
        out("watch_once /t/quiet: unexpected event")
    except etcd3.exceptions.WatchTimedOut:
        out("watch_once /t/quiet: WatchTimedOut")

    step("leases")
    lease = c.lease(30)
    out(f"lease granted: id={lease_name(lease.id)} ttl={lease.ttl}")
    c.put("/t/l/1", "leased", lease=lease)
    c.put("/t/l/2", "leased", lease=lease.id)
    value, m = c.get("/t/l/1")
    out(f"get /t/l/1: {kv_line(value, m)}")
    refreshed = lease.refresh()
    out(f"refresh: responses={len(refreshed)} id={lease_name(refreshed[0].ID)} ttl={refreshed[0].TTL}")
    remaining = lease.remaining_ttl
    out(f"remaining_ttl in (25, 30]: {25 < remaining <= 30}")
    out(f"granted_ttl: {lease.granted_ttl}")
    out(f"keys: {sorted(s(k) for k in lease.keys)}")
    info = c.get_lease_info(lease.id)
    out(f"lease info: id={lease_name(info.ID)} granted={info.grantedTTL}")
    chosen = c.lease(20, lease_id=0x7777)
    out(f"lease with a chosen id: id={hex(chosen.id)} ttl={chosen.ttl}")
    attempt("lease with a taken id", lambda: c.lease(20, lease_id=0x7777))
    lease.revoke()
    out(f"after revoke get /t/l/1: {c.get('/t/l/1')[0]} get_prefix /t/l/: {list(c.get_prefix('/t/l/'))}")
    out(f"after revoke remaining_ttl: {lease.remaining_ttl}")
    attempt("revoke again", lambda: c.revoke_lease(lease.id))
    attempt("put with an unknown lease", lambda: c.put("/t/l/3", "x", lease=0x1234))
    attempt("refresh an unknown lease", lambda: [r.TTL for r in c.refresh_lease(0x1234)])
    short = c.lease(1)
    c.put("/t/l/short", "expires", lease=short)
    deadline = time.monotonic() + 10
    while c.get("/t/l/short")[0] is not None and time.monotonic() < deadline:
        time.sleep(0.2)
    out(f"a 1 s lease's key is gone within 10 s: {c.get('/t/l/short')[0] is None}")
    chosen.revoke()

    step("locks")
    a = c.lock("res", ttl=20)
    b = c.lock("res", ttl=20)
    out(f"a acquire: {a.acquire(timeout=5)} is_acquired={a.is_acquired()}")
    out(f"b acquire with 1 s timeout: {b.acquire(timeout=1)}")
    value, m = c.get("/locks/res")
    out(f"lock key: version={m.version} lease_is_a={m.lease_id == a.lease.id}")
    result = {}
    waiter = threading.Thread(target=lambda: result.update(b=b.acquire(timeout=10)))
    waiter.start()
    time.sleep(0.3)
    out(f"b waiting while a holds: {waiter.is_alive()}")
    out(f"a release: {a.release()} a release again: {a.release()}")
    waiter.join(timeout=10)
    out(f"b acquired after a released: {result.get('b')} is_acquired={b.is_acquired()}")
    out(f"b refresh ttl: {b.refresh()[0].TTL}")
    out(f"b release: {b.release()}")
    with c.lock("ctx", ttl=20) as ctx:
        out(f"with lock: is_acquired={ctx.is_acquired()}")
    out(f"after with: key={c.get('/locks/ctx')[0]}")
    a.lease.revoke()
    b.lease.revoke()
    ctx.lease.revoke()

    step("members and status")
    status = c.status()
    members = list(c.members)
    me = members[0]
    out(f"members: {len(members)} name={me.name} peer={[port_free(u) for u in me.peer_urls]} client={[port_free(u) for u in me.client_urls]}")
    out(f"status: version={status.version} leader_is_member={status.leader is not None and status.leader.id == me.id} db_size_positive={status.db_size > 0} raft_index_positive={status.raft_index > 0}")
    out(f"alarms: {list(c.list_alarms())}")
    attempt("remove an unknown member", lambda: c.remove_member(0x1234))
    attempt("update an unknown member", lambda: c.update_member(0x1234, ["http://127.0.0.1:1"]))

    step("compaction and its errors")
    rev = c.put("/t/c", "c1").header.revision
    c.put("/t/c", "c2")
    attempt("compact at a future revision", lambda: c.compact(rev + 1000))
    c.compact(rev)
    out(f"compacted at {rev}")
    attempt("compact again at the same revision", lambda: c.compact(rev))
    # python-etcd3 0.12 drops a Range's revision (and limit, count_only): its own stub, on
    # the client's channel, sends one.
    def get_at(revision):
        req = etcdrpc.RangeRequest(key=b"/t/c", revision=revision)
        return [s(kv.value) for kv in c.kvstub.Range(req, CALL_TIMEOUT).kvs]

    attempt("get at a compacted revision", lambda: get_at(rev - 1))
    out(f"get at the compact revision: {get_at(rev)}")
    attempt("get at a future revision", lambda: get_at(rev + 1000))
    w = Collector()
    c.add_watch_callback("/t/c", w, start_revision=rev - 1)
    try:
        got = w.q.get(timeout=EVENT_WAIT)
        out(f"watch from a compacted revision: {type(got).__name__} compacted_revision={getattr(got, 'compacted_revision', None)}")
    except queue.Empty:
        out("watch from a compacted revision: nothing")
    attempt("put an empty key", lambda: c.put("", "x"))

    step("large, compressed and concurrent messages")
    big = b"x" * (1 << 20)
    for i in range(3):
        c.put(f"/t/big/{i}", big)
    # One 3 MiB answer: many HTTP/2 DATA frames, past the default flow-control windows.
    got = c.get_prefix("/t/big/")
    out(f"get_prefix /t/big/: {[(s(m.key), len(v), v == big) for v, m in got]}")
    attempt("put a 3 MiB value", lambda: c.put("/t/big/3", big * 3).header.revision)
    attempt("put just over --max-request-bytes", lambda: c.put("/t/big/3", big + b"x" * (1 << 19)).header.revision)
    out(f"delete_prefix /t/big/: deleted={c.delete_prefix('/t/big/').deleted}")

    # Oversized requests on the bidirectional streams end them with the same status (etcd's
    # receive error): a watch create with a 3 MiB key, and a keepalive carrying a 3 MiB
    # unknown field (raw bytes: field 15, length-delimited).
    def stream_outcome(responses):
        try:
            got = [type(r).__name__ for r in responses]
            return f"ended without error after {got}"
        except grpc.RpcError as exc:
            return f"error {exc.code().name} {exc.details()}"

    create = etcdrpc.WatchRequest(create_request=etcdrpc.WatchCreateRequest(key=big * 3))
    out("watch with a 3 MiB key: " + stream_outcome(etcdrpc.WatchStub(c.channel).Watch(iter([create]), CALL_TIMEOUT)))

    def varint(n):
        out_bytes = b""
        while n >= 0x80:
            out_bytes += bytes([(n & 0x7F) | 0x80])
            n >>= 7
        return out_bytes + bytes([n])

    padding = big * 3
    keepalive = b"\x08\x01" + b"\x7a" + varint(len(padding)) + padding
    lease_keep_alive = c.channel.stream_stream(
        "/etcdserverpb.Lease/LeaseKeepAlive", request_serializer=bytes, response_deserializer=bytes
    )
    out("keepalive of 3 MiB: " + stream_outcome(lease_keep_alive(iter([keepalive]), timeout=CALL_TIMEOUT)))
    gz = etcd3.client(host=host, port=port, timeout=CALL_TIMEOUT, grpc_options=[("grpc.default_compression_algorithm", 2)])
    attempt("put compressed with gzip", lambda: gz.put("/t/gz", "v" * 100).header.revision)
    gz.close()
    with ThreadPoolExecutor(max_workers=16) as pool:
        revisions = list(pool.map(lambda i: c.put(f"/t/conc/{i:03}", str(i)).header.revision, range(100)))
    out(f"100 puts from 16 threads: distinct revisions={len(set(revisions))} span={max(revisions) - min(revisions) + 1}")
    out(f"count /t/conc/: {len(list(c.get_prefix('/t/conc/', keys_only=True)))}")

    step("close")
    out("done")
    # Ends here: closing the channel under the client's watch thread only makes it print a
    # traceback, and interpreter shutdown could wait on gRPC's threads.
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
