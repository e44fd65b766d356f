#!/usr/bin/env python3
"""Many concurrent sessions: the latency from a message's final dot to its 250, and
the throughput, with 20 busy sessions, 1,000 busy sessions and 1,000 sessions that
trickle (a pause of PAUSE seconds between messages), each phase SECONDS long,
against one fresh release mtad that relays everything to an smtp-sink.

    cargo build --release && python3 benches/trickle.py [SECONDS] [PAUSE]
        (defaults: 20 s per phase, 1.0 s; MTAD_BIN=PATH measures another build)

A session connects, says EHLO, then sends 4 KB messages one after the other (MAIL,
RCPT, DATA, the message) on the same connection until the phase ends. The latency
is measured from sending the final `.` to reading the 250. Prints, per phase, the
messages accepted per second, p50/p99/max latency, refusals, and the CPU mtad used
per message. Needs smtp-sink (Postfix). Only loopback addresses are used.
"""
import asyncio, os, random, resource, socket, subprocess, sys, tempfile, time

SECONDS = float(sys.argv[1]) if len(sys.argv) > 1 else 20.0
PAUSE = float(sys.argv[2]) if len(sys.argv) > 2 else 1.0
root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
binary = os.environ.get("MTAD_BIN") or os.path.join(root, "target", "release", "mtad")
MESSAGE = (b"From: a@src.test\r\nTo: b@dst.test\r\nSubject: trickle\r\n\r\n"
           + (b"x" * 78 + b"\r\n") * 50 + b".\r\n")


def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p


def cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


async def reply(reader):
    while True:
        line = await reader.readline()
        if not line:
            raise IOError("closed")
        if line[3:4] != b"-":
            return line


async def session(port, stop, pause, latencies, counts):
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        counts["connect failed"] += 1
        return
    try:
        if not (await reply(reader)).startswith(b"220"):
            counts["refused"] += 1
            return
        writer.write(b"EHLO trickle.test\r\n")
        await reply(reader)
        if pause:
            await asyncio.sleep(random.uniform(0, pause))  # spread the sessions out
        while time.monotonic() < stop:
            writer.write(b"MAIL FROM:<a@src.test>\r\n")
            if not (await reply(reader)).startswith(b"250"):
                counts["refused"] += 1
                break
            writer.write(b"RCPT TO:<b@dst.test>\r\n")
            await reply(reader)
            writer.write(b"DATA\r\n")
            await reply(reader)
            t0 = time.perf_counter()
            writer.write(MESSAGE)
            line = await reply(reader)
            if line.startswith(b"250"):
                latencies.append(time.perf_counter() - t0)
            else:
                counts["refused"] += 1
            if pause:
                await asyncio.sleep(pause)
        writer.write(b"QUIT\r\n")
        await writer.drain()
    except (OSError, IOError):
        counts["dropped"] += 1
    finally:
        writer.close()


async def phase(port, sessions, pause):
    latencies, counts = [], {"refused": 0, "dropped": 0, "connect failed": 0}
    stop = time.monotonic() + SECONDS
    t0 = time.monotonic()
    await asyncio.gather(*(session(port, stop, pause, latencies, counts) for _ in range(sessions)))
    return latencies, counts, time.monotonic() - t0


def pct(values, p):
    return values[min(len(values) - 1, int(len(values) * p))] if values else float("nan")


def main():
    resource.setrlimit(resource.RLIMIT_NOFILE, (16384, 16384))
    port, sink_port = free_port(), free_port()
    with tempfile.TemporaryDirectory() as d:
        os.chmod(d, 0o755)
        sink = subprocess.Popen(["smtp-sink", "-u", "postfix", f"127.0.0.1:{sink_port}", "4096"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        cfg = os.path.join(d, "mtad.kdl")
        with open(cfg, "w") as f:
            f.write(f'''server {{
    hostname "trickle.bench.test"
    spool "{d}/spool"
}}
listen "bench" address="127.0.0.1:{port}"
limits {{
    connections 4000
    connections-per-ip 4000
    idle-timeout "10m"
}}
networks "loopback" "127.0.0.0/8"
stage "rcpt" {{
    accept client="loopback"
}}
stage "route" {{
    relay "smtp:[127.0.0.1]:{sink_port}" tls="none"
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
            hz = os.sysconf("SC_CLK_TCK")
            for name, sessions, pause in (("20 busy", 20, 0), ("1000 busy", 1000, 0),
                                          (f"1000 trickling ({PAUSE:g} s)", 1000, PAUSE)):
                ticks = cpu_ticks(proc.pid)
                lat, counts, took = asyncio.run(phase(port, sessions, pause))
                used = (cpu_ticks(proc.pid) - ticks) / hz
                lat.sort()
                n = len(lat)
                print(f"{name:26} {n / took:8.0f} msg/s  latency p50 {pct(lat, .5) * 1000:6.1f} ms"
                      f"  p99 {pct(lat, .99) * 1000:7.1f} ms  max {(lat[-1] if lat else 0) * 1000:7.1f} ms"
                      f"  mtad CPU {used / max(n, 1) * 1e6:4.0f} µs/msg"
                      + "".join(f"  {k} {v}" for k, v in counts.items() if v), flush=True)
        finally:
            proc.terminate(); proc.wait()
            sink.terminate(); sink.wait()


if __name__ == "__main__":
    main()
