#!/usr/bin/env python3
"""Session latency while mtad reloads: the same SMTP load twice against one release
mtad whose configuration has a 100,000-entry transport table, first without reloads,
then with a SIGHUP every INTERVAL seconds. Reports sessions, failures, p50/p99/max
session latency for each, and how many reloads happened.

    cargo build --release && python3 benches/reload_latency.py [SECONDS] [CLIENTS] [INTERVAL]
        (defaults: 10 s per phase, 8 clients, 0.5 s)

A session is connect, banner, EHLO, MAIL, RCPT, DATA with a 2 KB message, QUIT; the
message stays queued (queue-only). Only loopback addresses are used.
"""
import os, signal, socket, subprocess, sys, tempfile, threading, time

SECONDS = float(sys.argv[1]) if len(sys.argv) > 1 else 10.0
CLIENTS = int(sys.argv[2]) if len(sys.argv) > 2 else 8
INTERVAL = float(sys.argv[3]) if len(sys.argv) > 3 else 0.5
root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
binary = os.path.join(root, "target", "release", "mtad")
BODY = b"Subject: latency\r\n\r\n" + (b"x" * 78 + b"\r\n") * 25 + b".\r\n"


def reply(f):
    while True:
        line = f.readline()
        if not line:
            raise IOError("closed")
        if line[3:4] != b"-":
            return line


def session(port):
    t0 = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        f = s.makefile("rb")
        assert reply(f).startswith(b"220")
        for cmd, want in ((b"EHLO bench.test", b"250"), (b"MAIL FROM:<a@bench.test>", b"250"),
                          (b"RCPT TO:<x@customer42.example.test>", b"250"), (b"DATA", b"354")):
            s.sendall(cmd + b"\r\n")
            r = reply(f)
            assert r.startswith(want), (cmd, r)
        s.sendall(BODY)
        assert reply(f).startswith(b"250")
        s.sendall(b"QUIT\r\n")
        reply(f)
    return time.perf_counter() - t0


def phase(port, seconds):
    lat, failures, lock = [], [0], threading.Lock()
    stop = time.monotonic() + seconds

    def client():
        mine, bad = [], 0
        while time.monotonic() < stop:
            try:
                mine.append(session(port))
            except Exception:
                bad += 1
        with lock:
            lat.extend(mine)
            failures[0] += bad

    threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
    for t in threads:
        t.start()
    return threads, lat, failures


def report(name, lat, failures, extra=""):
    lat.sort()
    pct = lambda p: lat[min(len(lat) - 1, int(len(lat) * p))] * 1000
    print(f"{name:16} sessions={len(lat):6} failed={failures[0]} "
          f"p50={pct(0.50):6.2f} ms p99={pct(0.99):6.2f} ms max={lat[-1]*1000:7.2f} ms {extra}")
    return pct(0.99)


def main():
    with tempfile.TemporaryDirectory() as d:
        with open(f"{d}/transport", "w") as t:
            for i in range(100_000):
                t.write(f"customer{i}.example.test  smtp:[10.{i >> 16}.{(i >> 8) & 255}.{i & 255}]:25\n")
        s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
        cfg = f"{d}/mtad.kdl"
        with open(cfg, "w") as f:
            f.write(f'''server {{
    hostname "latency.bench.test"
    spool "{d}/spool"
}}
listen "mx" address="127.0.0.1:{port}"
limits {{
    connections-per-ip 1000
}}
networks "loopback" "127.0.0.0/8"
table "transport" file="transport"
stage "rcpt" {{
    accept client="loopback"
}}
stage "route" {{
    transport-table "transport"
}}
delivery {{
    queue-only #true
}}
''')
        log = open(f"{d}/log", "w")
        proc = subprocess.Popen([binary, "--config", cfg], stderr=log,
                                env=dict(os.environ, MTAD_LOG="warn,mtad::control::reload=info"))
        try:
            for _ in range(200):
                try:
                    socket.create_connection(("127.0.0.1", port)).close(); break
                except OSError:
                    time.sleep(0.05)
            session(port)  # warm up
            threads, lat, failures = phase(port, SECONDS)
            for t in threads:
                t.join()
            quiet = report("without reloads", lat, failures)
            threads, lat, failures = phase(port, SECONDS)
            reloads, stop = 0, time.monotonic() + SECONDS
            while time.monotonic() < stop:
                time.sleep(INTERVAL)
                os.kill(proc.pid, signal.SIGHUP)
                reloads += 1
            for t in threads:
                t.join()
            time.sleep(0.5)
            with open(f"{d}/log") as f:
                text = f.read()
            done = text.count("configuration reloaded")
            ms = [int(w[3:]) for w in text.split() if w.startswith("ms=")]
            extra = f"(SIGHUPs={reloads} reloads={done}"
            if ms:
                extra += f" reload time median={sorted(ms)[len(ms)//2]} ms max={max(ms)} ms"
            loud = report("with reloads", lat, failures, extra + ")")
            print(f"p99 with/without reloads: {loud / quiet:.2f}")
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)


main()
