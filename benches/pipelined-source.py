#!/usr/bin/env python3
"""smtp-source's load, pipelined as MTAs send it (Postfix's smtp client, RFC 2920):
after EHLO, MAIL, RCPT and DATA go in one write, then the message once the three
replies are in. smtp-source itself waits for each reply ("no SMTP command pipelining
support"), which costs a server that reads ahead what a pipelined command needs.

    python3 benches/pipelined-source.py [-d] [-c CLIENTS] -s SESSIONS -m MESSAGES \\
        -l SIZE -f SENDER -t RECIPIENT HOST:PORT

-d sends each session's messages over one connection (smtp-source's -d); without
it, every message has a connection of its own. -c connects from CLIENTS addresses
in turn, 127.1.0.1 and up (a server's many clients, each seen once when CLIENTS is
the number of connections); without it, from the address the system picks. Exits 1 when any message was not
accepted (the first reply that was not, on stderr). Only loopback addresses are used.
"""
import argparse, asyncio, itertools, sys


async def reply(reader):
    """The last line of one reply (a multi-line reply's lines before it skipped)."""
    while True:
        line = await reader.readline()
        if not line:
            raise IOError("connection closed")
        if line[3:4] != b"-":
            return line.decode("latin-1").rstrip()


async def expect(reader, code):
    line = await reply(reader)
    if not line.startswith(code):
        raise IOError(line)


async def session(args, messages, body):
    reader = writer = None
    try:
        for i in range(messages):
            if reader is None:
                local = None
                if args.c:
                    n = next(args.sources) % args.c + 1
                    local = (f"127.1.{n >> 8}.{n & 255}", 0)
                reader, writer = await asyncio.open_connection(
                    args.host, args.port, local_addr=local)
                await expect(reader, "220")
                writer.write(b"EHLO source.bench.test\r\n")
                await expect(reader, "250")
            writer.write(f"MAIL FROM:<{args.f}>\r\nRCPT TO:<{args.t}>\r\nDATA\r\n".encode())
            await expect(reader, "250")
            await expect(reader, "250")
            await expect(reader, "354")
            writer.write(body)
            await expect(reader, "250")
            if not args.d or i == messages - 1:
                writer.write(b"QUIT\r\n")
                await expect(reader, "221")
                writer.close()
                await writer.wait_closed()
                reader = writer = None
    finally:
        if writer is not None:
            writer.close()


async def main():
    p = argparse.ArgumentParser()
    p.add_argument("-d", action="store_true")
    p.add_argument("-c", type=int, default=0)
    p.add_argument("-s", type=int, default=1)
    p.add_argument("-m", type=int, default=1)
    p.add_argument("-l", type=int, default=4096)
    p.add_argument("-f", default="sender@src.test")
    p.add_argument("-t", default="rcpt@dst.test")
    p.add_argument("server")
    args = p.parse_args()
    host, port = args.server.rsplit(":", 1)
    if not host.startswith("127.") and host != "::1":
        sys.exit("loopback addresses only")
    args.host, args.port = host, int(port)
    if not 0 <= args.c < 65535:
        sys.exit("-c: 0 to 65534 addresses")
    args.sources = itertools.count()
    line = b"x" * 78 + b"\r\n"
    body = (f"From: <{args.f}>\r\nTo: <{args.t}>\r\nSubject: pipelined\r\n\r\n".encode()
            + line * max(1, args.l // len(line)) + b".\r\n")
    share = [args.m // args.s + (1 if i < args.m % args.s else 0) for i in range(args.s)]
    results = await asyncio.gather(
        *(session(args, n, body) for n in share if n), return_exceptions=True)
    failed = [r for r in results if isinstance(r, Exception)]
    if failed:
        print(f"pipelined-source: {len(failed)} sessions failed: {failed[0]}", file=sys.stderr)
        sys.exit(1)


asyncio.run(main())
