#!/usr/bin/env python3
"""Load script for Rhai hooks (issue 17): what a hook that uses its whole budget costs
the other sessions, and the memory a huge header block costs a data hook.

    benches/hook_load.py stall   [--mtad target/release/mtad] [--sessions 4] [--plain 50]
    benches/hook_load.py headers [--mtad target/release/mtad] [--lines 2000000]

stall:   4 sessions pipeline RCPTs whose rcpt hook loops until its wall-time budget
         (100 ms) stops it, again and again; meanwhile plain sessions (EHLO, MAIL,
         RCPT whose hook returns at once, DATA, QUIT) run one after another. Prints the
         plain sessions' latency (median, p90, max), first alone, then beside the
         busy ones. Target: median < 50 ms beside them.
headers: one message of LINES tiny header lines (`a:` CRLF) through a data hook that
         reads one header and the body; prints mtad's peak RSS (VmHWM) before and
         after, and the message size.

Speed is never asserted in tests (tests/hooks.rs checks the order only); quote the
figures of one run next to each other, the machines are shared.
"""

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

CONFIG = """
server {{
    hostname "mx.example.test"
    spool "{spool}"
}}
listen "mx" address="127.0.0.1:{port}"
limits {{
    error-limit 1000000
    message-size 100000000
}}
stage "rcpt" {{
    hook "rcpt.rhai"
}}
stage "data" {{
    hook "data.rhai"
}}
delivery {{
    queue-only #true
}}
"""

# the worst a hook may do: compute until the budget stops it
RCPT = """
fn rcpt(ctx) {
    if ctx.rcpt.local == "busy" { let x = 0; loop { x += 1; } }
    accept()
}
"""

DATA = """
fn data(ctx) {
    if ctx.header("Subject") == "drop me" { return discard(); }
    if ctx.body().contains("INVOICE.zip") { return hold(); }
    accept()
}
"""


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def start(mtad, dir):
    port = free_port()
    with open(os.path.join(dir, "mtad.kdl"), "w") as f:
        f.write(CONFIG.format(spool=os.path.join(dir, "spool"), port=port))
    with open(os.path.join(dir, "rcpt.rhai"), "w") as f:
        f.write(RCPT)
    with open(os.path.join(dir, "data.rhai"), "w") as f:
        f.write(DATA)
    log = open(os.path.join(dir, "mtad.log"), "w")
    env = dict(os.environ, MTAD_LOG="warn,mtad=warn")
    proc = subprocess.Popen([mtad, "--allow-root", "--config", os.path.join(dir, "mtad.kdl")],
                            stderr=log, stdout=subprocess.DEVNULL, env=env)
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc, port
        except OSError:
            time.sleep(0.05)
    proc.kill()
    sys.exit("mtad did not start; see " + log.name)


class Smtp:
    def __init__(self, port):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=120)
        self.f = self.s.makefile("rb")
        self.reply("220")

    def reply(self, expect):
        while True:
            line = self.f.readline().decode()
            if not line:
                raise RuntimeError("connection closed")
            if line[3:4] != "-":
                break
        if not line.startswith(expect):
            raise RuntimeError(f"expected {expect}, got {line!r}")
        return line

    def cmd(self, line, expect):
        self.s.sendall(line.encode() + b"\r\n")
        return self.reply(expect)

    def close(self):
        self.s.close()


def plain_session(port):
    started = time.perf_counter()
    c = Smtp(port)
    c.cmd("EHLO plain.test", "250")
    c.cmd("MAIL FROM:<a@src.test>", "250")
    c.cmd("RCPT TO:<plain@example.test>", "250")
    c.cmd("DATA", "354")
    c.cmd("Subject: drop me\r\n\r\nplain\r\n.", "250")
    c.cmd("QUIT", "221")
    c.close()
    return time.perf_counter() - started


def busy(port, stop, counts, i):
    c = Smtp(port)
    c.cmd("EHLO busy.test", "250")
    c.cmd("MAIL FROM:<a@src.test>", "250")
    while not stop.is_set():
        c.s.sendall(b"RCPT TO:<busy@example.test>\r\n" * 10)
        for _ in range(10):
            c.reply("451")
            counts[i] += 1
    c.close()


def summary(name, xs):
    xs = sorted(xs)
    ms = lambda x: f"{x * 1000:.1f} ms"
    print(f"{name:>28}: median {ms(statistics.median(xs))}, "
          f"p90 {ms(xs[int(len(xs) * 0.9) - 1])}, max {ms(xs[-1])} ({len(xs)} sessions)")


def stall(args):
    with tempfile.TemporaryDirectory() as dir:
        proc, port = start(args.mtad, dir)
        try:
            alone = [plain_session(port) for _ in range(args.plain)]
            stop = threading.Event()
            counts = [0] * args.sessions
            threads = [threading.Thread(target=busy, args=(port, stop, counts, i))
                       for i in range(args.sessions)]
            for t in threads:
                t.start()
            while sum(1 for c in counts if c > 0) < args.sessions:
                time.sleep(0.05)
            started = time.time()
            beside = [plain_session(port) for _ in range(args.plain)]
            took = time.time() - started
            stop.set()
            for t in threads:
                t.join()
            summary("plain session, alone", alone)
            summary(f"beside {args.sessions} busy hooks", beside)
            print(f"{'busy hook calls':>28}: {sum(counts)} "
                  f"({sum(counts) / (time.time() - started):.1f}/s over {took:.1f} s)")
        finally:
            proc.terminate()
            proc.wait(timeout=30)


def rss_kib(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def headers(args):
    with tempfile.TemporaryDirectory() as dir:
        proc, port = start(args.mtad, dir)
        try:
            print("log:", os.path.join(dir, "mtad.log"))
            plain_session(port)  # warm up: everything a session allocates once
            before = rss_kib(proc.pid, "VmHWM")
            message = b"Subject: drop me\r\n" + b"a:\r\n" * args.lines + b"\r\nbody\r\n"
            c = Smtp(port)
            c.cmd("EHLO big.test", "250")
            c.cmd("MAIL FROM:<a@src.test>", "250")
            c.cmd("RCPT TO:<b@example.test>", "250")
            c.cmd("DATA", "354")
            started = time.perf_counter()
            c.s.sendall(message + b".\r\n")
            reply = c.reply("")
            took = time.perf_counter() - started
            c.close()
            after = rss_kib(proc.pid, "VmHWM")
            print(f"message: {len(message) / 1e6:.1f} MB, {args.lines} header lines; "
                  f"reply {reply.strip()!r} after {took:.2f} s")
            print(f"mtad peak RSS: {before / 1024:.1f} MiB before, {after / 1024:.1f} MiB "
                  f"after (+{(after - before) / 1024:.1f} MiB, "
                  f"{(after - before) * 1024 / len(message):.1f}x the message)")
        finally:
            proc.terminate()
            proc.wait(timeout=30)
            with open(os.path.join(dir, "mtad.log")) as f:
                for line in f:
                    if "hook" in line:
                        print("mtad:", line.strip()[:300])


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", choices=["stall", "headers"])
    here = os.path.dirname(os.path.abspath(__file__))
    p.add_argument("--mtad", default=os.path.join(here, "..", "target", "release", "mtad"))
    p.add_argument("--sessions", type=int, default=4)
    p.add_argument("--plain", type=int, default=50)
    p.add_argument("--lines", type=int, default=2_000_000)
    args = p.parse_args()
    {"stall": stall, "headers": headers}[args.mode](args)


if __name__ == "__main__":
    main()
