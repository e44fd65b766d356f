#!/usr/bin/python3
"""An after-queue content filter on aiosmtpd, for tests/content_filter.rs.

    filter_peer.py DIR PORT REINJECT_PORT [--temp-fail] [--perm-fail]

Listens on 127.0.0.1:PORT (0: a free port) and prints "ready PORT" once it accepts.
Offers XFORWARD (NAME ADDR PROTO HELO SOURCE IDENT). Each message it takes is changed
the way a real filter changes mail: an `X-Filtered-By: test-filter` header on top and
`[filtered] ` put in front of the Subject; then it is injected again over SMTP to
127.0.0.1:REINJECT_PORT, and only when that succeeds does the filter answer 250 (like
amavisd-new). DIR/N.env gets the envelope and the XFORWARD attributes ("XFORWARD
ADDR=... HELO=..." lines, "MAIL <from>", "RCPT <to>" lines), DIR/N.eml the message as
received.

--temp-fail answers 451 to every DATA, --perm-fail 554 (nothing is injected).
"""
import argparse
import asyncio
import os
import re
import smtplib
import sys

from aiosmtpd.smtp import SMTP


class XforwardSMTP(SMTP):
    async def smtp_XFORWARD(self, arg):
        if not arg:
            await self.push("501 5.5.4 Syntax: XFORWARD attribute=value...")
            return
        self.session.xforward = getattr(self.session, "xforward", []) + [arg]
        await self.push("250 2.0.0 Ok")


class Filter:
    def __init__(self, directory, reinject, temp_fail, perm_fail):
        self.directory = directory
        self.reinject = reinject
        self.temp_fail = temp_fail
        self.perm_fail = perm_fail
        self.count = 0

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        session.xforward = []
        responses.insert(1, "250-XFORWARD NAME ADDR PROTO HELO SOURCE IDENT")
        return responses

    async def handle_DATA(self, server, session, envelope):
        if self.temp_fail:
            return "451 4.3.0 filter busy, try again later"
        if self.perm_fail:
            return "554 5.7.0 message refused by the content filter"
        self.count += 1
        base = os.path.join(self.directory, str(self.count))
        content = envelope.original_content
        env = "".join("XFORWARD %s\n" % x for x in getattr(session, "xforward", []))
        env += "MAIL <%s>\n" % envelope.mail_from
        env += "".join("RCPT <%s>\n" % r for r in envelope.rcpt_tos)
        changed = b"X-Filtered-By: test-filter\r\n" + re.sub(
            rb"(?m)^Subject: ", b"Subject: [filtered] ", content, count=1
        )
        try:
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(
                None, self.inject, envelope.mail_from, envelope.rcpt_tos, changed
            )
        except Exception as e:  # the message stays with the relay
            return "451 4.3.0 reinjection failed: %s" % str(e).replace("\r", " ").replace("\n", " ")[:200]
        with open(base + ".env.tmp", "w") as f:
            f.write(env)
        with open(base + ".eml.tmp", "wb") as f:
            f.write(content)
        os.rename(base + ".env.tmp", base + ".env")
        os.rename(base + ".eml.tmp", base + ".eml")
        return "250 2.0.0 Ok: filtered and injected again"

    def inject(self, sender, rcpts, message):
        with smtplib.SMTP("127.0.0.1", self.reinject, timeout=30) as s:
            s.ehlo("filter.test")
            refused = s.sendmail(sender, rcpts, message)
            if refused:
                raise RuntimeError("recipients refused: %r" % refused)


async def main():
    p = argparse.ArgumentParser()
    p.add_argument("dir")
    p.add_argument("port", type=int)
    p.add_argument("reinject", type=int)
    p.add_argument("--temp-fail", action="store_true")
    p.add_argument("--perm-fail", action="store_true")
    a = p.parse_args()
    handler = Filter(a.dir, a.reinject, a.temp_fail, a.perm_fail)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: XforwardSMTP(handler, hostname="filter.test", ident="test-filter"),
        host="127.0.0.1",
        port=a.port,
        reuse_address=True,
    )
    port = server.sockets[0].getsockname()[1]
    print("ready %d" % port, flush=True)
    await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
