#!/usr/bin/env python3
"""Each member's CPU per linearizable read served through a follower (docs/benchmarks.md,
"Linearizable reads through a follower").

    scripts/follower-reads-cpu.py BALLAST_BIN LABEL [ballast-bench range options...]

Starts a 3-member Ballast cluster of BALLAST_BIN on free 127.0.0.1 ports (data dirs in a
temporary directory, removed at the end; the members are killed also on an error), waits until
all three name one leader, runs `ballast-bench range --consistency l` against one follower of
shard 0 with the given options (`$BALLAST_BENCH`, default target/release/ballast-bench), samples
every member's CPU time (/proc/<pid>/stat utime+stime) twice a second, and prints one JSON line:
CPU per read of the leader, the reading follower and the other follower over a 10 s window
ending 2 s before the bench ends (so it holds no preload and no warm-up), with the bench's qps
and latency and shard 0's read-index counters from /metrics. Needs etcdctl. Use a --duration of
at least 15 s."""
import json, os, shutil, subprocess, sys, tempfile, time, socket

binary, label = sys.argv[1], sys.argv[2]
bench = os.environ.get("BALLAST_BENCH", "target/release/ballast-bench")
extra = sys.argv[3:]
TICK = os.sysconf("SC_CLK_TCK")

def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p

ports = [(free_port(), free_port()) for _ in range(3)]
ic = ",".join(f"m{i}=http://127.0.0.1:{p}" for i, (_, p) in enumerate(ports))
root = tempfile.mkdtemp(prefix="follower-reads-")
procs = []
try:
    for i, (c, p) in enumerate(ports):
        log = open(f"{root}/m{i}.log", "w")
        procs.append(subprocess.Popen([binary, "--name", f"m{i}", "--data-dir", f"{root}/m{i}",
            "--listen-client-urls", f"http://127.0.0.1:{c}", "--advertise-client-urls", f"http://127.0.0.1:{c}",
            "--listen-peer-urls", f"http://127.0.0.1:{p}", "--initial-advertise-peer-urls", f"http://127.0.0.1:{p}",
            "--initial-cluster", ic, "--initial-cluster-state", "new", "--initial-cluster-token", "follower-reads"],
            stdout=log, stderr=subprocess.STDOUT))
    eps = [f"127.0.0.1:{c}" for c, _ in ports]
    deadline = time.time() + 30
    while True:
        r = subprocess.run(["etcdctl", f"--endpoints={','.join(eps)}", "endpoint", "status", "-w", "json"],
                           capture_output=True, text=True, env={**os.environ, "ETCDCTL_API": "3"})
        if r.returncode == 0:
            st = json.loads(r.stdout)
            leaders = {s["Status"].get("leader", 0) for s in st}
            if len(st) == 3 and len(leaders) == 1 and 0 not in leaders:
                break
        if time.time() > deadline:
            sys.exit(f"no leader: {r.stdout} {r.stderr}")
        time.sleep(0.5)
    leader = st[0]["Status"]["leader"]
    ids = [s["Status"]["header"]["member_id"] for s in st]
    li = ids.index(leader)
    fi = next(i for i in range(3) if i != li)
    def cpu():
        out = []
        for p in procs:
            f = open(f"/proc/{p.pid}/stat").read().rsplit(")", 1)[1].split()
            out.append((int(f[11]) + int(f[12])) / TICK)
        return out
    cmd = [bench, "range", "--endpoints", eps[fi], "--consistency", "l", "--json", "--no-progress"] + extra
    b = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    samples = []
    while b.poll() is None:
        samples.append((time.time(), cpu()))
        time.sleep(0.5)
    end = time.time()
    result = json.loads(b.stdout.read())
    def counter(i, name):
        import urllib.request
        text = urllib.request.urlopen(f"http://{eps[i]}/metrics").read().decode()
        return next((int(l.split()[-1]) for l in text.splitlines() if l.startswith(name + '{shard="0"}')), None)
    questions = counter(li, "ballast_shard_read_indexes_answered_total")
    forwarded = counter(li, "ballast_shard_forwarded_served_total")
    local = counter(fi, "ballast_shard_follower_reads_total")
    win = [s for s in samples if end - 12.5 <= s[0] <= end - 2]
    t0, c0 = win[0]; t1, c1 = win[-1]
    reads = result["qps"] * (t1 - t0)
    per = [(c1[i] - c0[i]) * 1e6 / reads for i in range(3)]
    print(json.dumps({"label": label, "qps": round(result["qps"]), "p50_ms": result["p50_ms"],
        "p99_ms": result["p99_ms"], "errors": result["error_total"],
        "window_s": round(t1 - t0, 1),
        "leader_cpu_us_per_read": round(per[li], 1),
        "reading_follower_cpu_us_per_read": round(per[fi], 1),
        "other_follower_cpu_us_per_read": round(per[3 - li - fi], 1),
        "cluster_cpu_us_per_read": round(sum(per), 1),
        "leader_cores": round((c1[li] - c0[li]) / (t1 - t0), 2),
        "leader_read_indexes": questions, "leader_forwarded_served": forwarded, "follower_reads": local,
        "bench": " ".join(cmd[1:])}))
finally:
    for p in procs:
        p.kill(); p.wait()
    shutil.rmtree(root, ignore_errors=True)
