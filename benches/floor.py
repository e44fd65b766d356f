#!/usr/bin/env python3
"""What the load generator and the sink cost by themselves: smtp-source straight into
smtp-sink (the ceiling of compare-postfix.sh), with its CPU per message, once with a new
connection per message (as smtp-source sends to a relay in the benches) and once with
every session's messages over one connection (-d, as a relay's delivery sends them).

    python3 benches/floor.py [MSGS] [SESSIONS] [SIZE]     # default 20000 20 4096

A relay receives what smtp-sink receives and sends what smtp-source sends, so its CPU
per message cannot be much under the sink's (new connections) plus the source's (one
connection per session): that is the floor printed at the end, to set beside
`benches/relay-ab.sh`'s CPU per message. Needs smtp-source and smtp-sink (Postfix);
port 14136 on 127.0.0.1.
"""
import os
import resource
import socket
import subprocess
import sys
import time

MSGS = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
SESSIONS = int(sys.argv[2]) if len(sys.argv) > 2 else 20
SIZE = int(sys.argv[3]) if len(sys.argv) > 3 else 4096
PORT = 14136
TICK = os.sysconf("SC_CLK_TCK")


def cpu_of(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime


def wait_port(port):
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"nothing listens on port {port}")


def run(reuse):
    user = ["-u", "postfix"] if os.getuid() == 0 else []
    sink = subprocess.Popen(
        ["smtp-sink", *user, f"127.0.0.1:{PORT}", "1024"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        wait_port(PORT)
        sink0 = cpu_of(sink.pid)
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.monotonic()
        subprocess.run(
            ["smtp-source", *(["-d"] if reuse else []), "-4", "-N", "-s", str(SESSIONS),
             "-m", str(MSGS), "-l", str(SIZE), "-f", "a@src.test", "-t", "b@dst.test",
             f"127.0.0.1:{PORT}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True,
        )
        elapsed = time.monotonic() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        source = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        sink_cpu = cpu_of(sink.pid) - sink0
    finally:
        sink.kill()
        sink.wait()
    return MSGS / elapsed, source * 1e6 / MSGS, sink_cpu * 1e6 / MSGS


new = run(reuse=False)
reused = run(reuse=True)
for name, (rate, source, sink) in (("a connection per message", new),
                                   ("one connection per session (-d)", reused)):
    print(f"{name:34} {rate:8.0f} msg/s   smtp-source {source:6.1f} us/msg   "
          f"smtp-sink {sink:6.1f} us/msg")
print(f"floor of a relay (sink, new connections + source, reused): "
      f"{new[2] + reused[1]:.0f} us of CPU per message")
