#!/usr/bin/python3
"""A recording SMTP/LMTP server on aiosmtpd, for tests/delivery_client.rs.

    aiosmtpd_peer.py DIR [--lmtp] [--size N] [--smtputf8] [--pipelining]
                         [--unix PATH] [--tls CERT KEY] [--require-starttls]
                         [--auth USER:PASS] [--auth-exclude MECH]... [--auth-plaintext]

Listens on 127.0.0.1 on a free port and prints "ready PORT" once it accepts (with
--unix, on the unix socket PATH, and prints "ready unix"). Each message is written, as
received after dot-unstuffing, to DIR/N.eml, and its envelope to DIR/N.env ("TLS yes"
or "TLS no", "AUTH user" or "AUTH -", "MAIL <from> options", then one "RCPT <to>" line
each).

--tls offers STARTTLS with that certificate chain and key (PEM); --require-starttls
refuses everything but EHLO, NOOP and QUIT before it. --auth offers AUTH (PLAIN and
LOGIN and a CRAM-MD5 that always fails, minus any --auth-exclude) after STARTTLS (before it too with --auth-plaintext),
accepts only USER:PASS, and requires it before MAIL.

Per-recipient answers, by local part: temp* -> 450 4.2.1 at RCPT, perm* -> 550 5.1.1
at RCPT; with --lmtp, full* -> 452 4.2.2 after the body (one reply per recipient).
aiosmtpd reads commands one line at a time, so it serves pipelined clients; with
--pipelining it also says so in its EHLO reply.
"""
import argparse
import asyncio
import os
import ssl
import sys

from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import SMTP, AuthResult


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

    async def auth_CRAM__MD5(self, server, args):
        """Offered as "CRAM-MD5", never succeeds: a mechanism the client lacks."""
        return AuthResult(success=False, handled=False)

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
        user = session.login_data
        env = "TLS %s\n" % ("yes" if session.ssl is not None else "no")
        env += "AUTH %s\n" % (user.decode() if user is not None else "-")
        env += "MAIL <%s> %s\n" % (envelope.mail_from, " ".join(envelope.mail_options))
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


def authenticator_for(user_pass):
    user, password = user_pass.encode().split(b":", 1)

    def authenticate(server, session, envelope, mechanism, auth_data):
        ok = auth_data.login == user and auth_data.password == password
        # handled=False: aiosmtpd itself answers a failure with 535 5.7.8.
        return AuthResult(success=ok, handled=False, auth_data=auth_data)

    return authenticate


async def main():
    p = argparse.ArgumentParser()
    p.add_argument("dir")
    p.add_argument("--lmtp", action="store_true")
    p.add_argument("--size", type=int, default=10 * 1024 * 1024)
    p.add_argument("--smtputf8", action="store_true")
    p.add_argument("--pipelining", action="store_true")
    p.add_argument("--unix", metavar="PATH")
    p.add_argument("--tls", nargs=2, metavar=("CERT", "KEY"))
    p.add_argument("--require-starttls", action="store_true")
    p.add_argument("--auth", metavar="USER:PASS")
    p.add_argument("--auth-exclude", action="append", default=[], metavar="MECH")
    p.add_argument("--auth-plaintext", action="store_true")
    a = p.parse_args()
    handler = Recorder(a.dir, a.lmtp, a.pipelining)
    proto = LMTP if a.lmtp else SMTP
    options = dict(
        hostname="aiosmtpd.test",
        data_size_limit=a.size,
        enable_SMTPUTF8=a.smtputf8,
    )
    if a.tls:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(a.tls[0], a.tls[1])
        options.update(tls_context=context, require_starttls=a.require_starttls)
    if a.auth:
        options.update(
            authenticator=authenticator_for(a.auth),
            auth_required=True,
            auth_require_tls=not a.auth_plaintext,
            auth_exclude_mechanism=a.auth_exclude,
        )
    else:
        # aiosmtpd offers AUTH (to fail it) unless told otherwise.
        options.update(auth_exclude_mechanism=["PLAIN", "LOGIN", "CRAM-MD5"])
    loop = asyncio.get_running_loop()
    if a.unix:
        server = await loop.create_unix_server(lambda: proto(handler, **options), a.unix)
        print("ready unix", flush=True)
    else:
        server = await loop.create_server(
            lambda: proto(handler, **options), "127.0.0.1", 0
        )
        print("ready", server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
