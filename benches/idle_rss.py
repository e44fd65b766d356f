#!/usr/bin/env python3
"""Memory per idle connection: open N connections to a fresh mtad, read each greeting,
and report how much the daemon's RSS grew, per connection.

    cargo build --release && python3 benches/idle_rss.py [N]     (default 5000)

Connections come from 127.0.0.1..127.0.0.20 so per-client limits are not what is measured.
"""
import os, socket, subprocess, sys, tempfile, time

N = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
binary = os.path.join(root, "target", "release", "mtad")

def rss_kib(pid, field="VmRSS:"):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1])

def main():
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    with tempfile.TemporaryDirectory() as d:
        s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
        cfg = os.path.join(d, "mtad.kdl")
        with open(cfg, "w") as f:
            f.write(f'''server {{
    hostname "idle.bench.test"
    spool "{d}/spool"
}}
listen "idle" address="127.0.0.1:{port}"
limits {{
    connections {N + 100}
    connections-per-ip {N}
    idle-timeout "10m"
}}
networks "loopback" "127.0.0.0/8"
stage "rcpt" {{
    accept client="loopback"
}}
''')
        proc = subprocess.Popen([binary, "--config", cfg], stderr=subprocess.DEVNULL,
                                env=dict(os.environ, MTAD_LOG="warn"))
        try:
            for _ in range(200):
                try:
                    socket.create_connection(("127.0.0.1", port)).close(); break
                except OSError:
                    time.sleep(0.05)
            time.sleep(0.3)
            base = rss_kib(proc.pid)
            conns = []
            for i in range(N):
                c = socket.socket()
                c.bind((f"127.0.0.{1 + i % 20}", 0))
                c.connect(("127.0.0.1", port))
                conns.append(c)
            for c in conns:
                c.settimeout(10)
                assert c.recv(512).startswith(b"220 ")
            time.sleep(0.5)
            loaded = rss_kib(proc.pid)
            per = (loaded - base) * 1024 / N
            print(f"idle connections={N} rss_before={base} KiB rss_after={loaded} KiB "
                  f"per_connection={per / 1024:.1f} KiB (target < 64 KiB)")
            for c in conns:
                c.close()
        finally:
            proc.terminate(); proc.wait(timeout=30)

main()
