#!/usr/bin/python3
"""A recording SMTP/LMTP server on aiosmtpd, for tests/delivery_client.rs.

    aiosmtpd_peer.py DIR [--lmtp] [--size N] [--smtputf8] [--pipelining]

Listens on 127.0.0.1 on a free port and prints "ready PORT" once it accepts. Each
message is written, as received after dot-unstuffing, to DIR/N.eml, and its envelope
to DIR/N.env ("MAIL <from> options" then one "RCPT <to>" line each).

Per-recipient answers, by local part: temp* -> 450 4.2.1 at RCPT, perm* -> 550 5.1.1
at RCPT; with --lmtp, full* -> 452 4.2.2 after the body (one reply per recipient).
aiosmtpd reads commands one line at a time, so it serves pipelined clients; with
--pipelining it also says so in its EHLO reply.
"""
import argparse
import asyncio
import os
import sys

from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import SMTP


class Recorder:
    def __init__(self, directory, lmtp, pipelining):
        self.directory = directory
        self.lmtp = lmtp
        self.pipelining = pipelining
        self.count = 0

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        if self.pipelining:
            responses.insert(1, "250-PIPELINING")
        return responses

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        local = address.split("@")[0]
        if local.startswith("temp"):
            return "450 4.2.1 mailbox busy, try later"
        if local.startswith("perm"):
            return "550 5.1.1 no such user here"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        self.count += 1
        base = os.path.join(self.directory, str(self.count))
        env = "MAIL <%s> %s\n" % (envelope.mail_from, " ".join(envelope.mail_options))
        env += "".join("RCPT <%s>\n" % r for r in envelope.rcpt_tos)
        with open(base + ".env.tmp", "w") as f:
            f.write(env)
        with open(base + ".eml.tmp", "wb") as f:
            f.write(envelope.original_content)
        os.rename(base + ".env.tmp", base + ".env")
        os.rename(base + ".eml.tmp", base + ".eml")
        if self.lmtp:
            return "\r\n".join(
                "452 4.2.2 <%s> mailbox full" % r
                if r.startswith("full")
                else "250 2.0.0 <%s> delivered" % r
                for r in envelope.rcpt_tos
            )
        return "250 2.0.0 queued as %d" % self.count


async def main():
    p = argparse.ArgumentParser()
    p.add_argument("dir")
    p.add_argument("--lmtp", action="store_true")
    p.add_argument("--size", type=int, default=10 * 1024 * 1024)
    p.add_argument("--smtputf8", action="store_true")
    p.add_argument("--pipelining", action="store_true")
    a = p.parse_args()
    handler = Recorder(a.dir, a.lmtp, a.pipelining)
    proto = LMTP if a.lmtp else SMTP
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: proto(
            handler,
            hostname="aiosmtpd.test",
            data_size_limit=a.size,
            enable_SMTPUTF8=a.smtputf8,
        ),
        "127.0.0.1",
        0,
    )
    print("ready", server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
