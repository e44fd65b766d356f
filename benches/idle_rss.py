#!/usr/bin/env python3
"""Memory per idle connection: open N connections to a fresh mtad, read each greeting,
and report how much the daemon's RSS grew, per connection. With --tls, each
connection also says EHLO and STARTTLS and completes the handshake before it idles:
the memory of an idle TLS session.

    cargo build --release && python3 benches/idle_rss.py [N] [--tls]     (default 5000)
    (MTAD_BIN=PATH measures another build)

Connections come from 127.0.0.1..127.0.0.20 so per-client limits are not what is measured.
"""
import os, socket, ssl, subprocess, sys, tempfile, time

args = [a for a in sys.argv[1:] if not a.startswith("--")]
N = int(args[0]) if args else 5000
TLS = "--tls" in sys.argv
root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
binary = os.environ.get("MTAD_BIN") or os.path.join(root, "target", "release", "mtad")

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
        tls_lines = ""
        if TLS:
            subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                            "ec_paramgen_curve:P-256", "-nodes", "-days", "1", "-subj",
                            "/CN=localhost", "-keyout", f"{d}/key.pem", "-out",
                            f"{d}/cert.pem"], check=True, capture_output=True)
            tls_lines = f'    tls-certificate "{d}/cert.pem"\n    tls-key "{d}/key.pem"\n'
        with open(cfg, "w") as f:
            f.write(f'''server {{
    hostname "idle.bench.test"
    spool "{d}/spool"
{tls_lines}}}
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
        as_root = ["--allow-root"] if os.geteuid() == 0 else []
        proc = subprocess.Popen([binary, *as_root, "--config", cfg], stderr=subprocess.DEVNULL,
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
            if TLS:
                ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
                wrapped = []
                for c in conns:
                    c.sendall(b"EHLO idle.test\r\n")
                    ehlo = b""
                    while not ehlo.endswith(b"\r\n") or b"\n250 " not in b"\n" + ehlo:
                        ehlo += c.recv(4096)
                    c.sendall(b"STARTTLS\r\n")
                    assert c.recv(512).startswith(b"220 ")
                    wrapped.append(ctx.wrap_socket(c, server_hostname="localhost"))
                conns = wrapped
            time.sleep(0.5)
            loaded = rss_kib(proc.pid)
            per = (loaded - base) * 1024 / N
            print(f"idle {'TLS ' if TLS else ''}connections={N} rss_before={base} KiB rss_after={loaded} KiB "
                  f"per_connection={per / 1024:.1f} KiB (target < 64 KiB)")
            for c in conns:
                c.close()
        finally:
            proc.terminate(); proc.wait(timeout=30)

main()
