#!/usr/bin/python3
"""Verify every DKIM-Signature of a message with python3-dkim (dkimpy), Debian's
independent verifier, the public keys coming from the command line instead of DNS.

    dkim_verify.py MESSAGE_FILE NAME=TXT...

NAME is SELECTOR._domainkey.DOMAIN and TXT the record's text. Line endings are
made CRLF first (smtp-sink dumps with LF). Prints one line per signature,
"pass d=DOMAIN s=SELECTOR a=ALGORITHM" or "fail ...", and exits 0 only when there is
at least one signature and all of them pass.
"""
import re
import sys

import dkim

records = {}
for arg in sys.argv[2:]:
    name, _, txt = arg.partition("=")
    records[name.lower().rstrip(".")] = txt.encode()


def dnsfunc(name, timeout=5):
    if isinstance(name, bytes):
        name = name.decode()
    return records.get(name.lower().rstrip("."))


with open(sys.argv[1], "rb") as f:
    message = f.read()
message = re.sub(rb"\r?\n", b"\r\n", message)

verifier = dkim.DKIM(message)
count = len([h for h in verifier.headers if h[0].lower() == b"dkim-signature"])
ok = count > 0
for idx in range(count):
    try:
        good = verifier.verify(idx=idx, dnsfunc=dnsfunc)
        why = ""
    except dkim.DKIMException as e:
        good = False
        why = f" ({e})"
    sig = verifier.signature_fields
    tags = " ".join(
        f"{k}={sig.get(k.encode(), b'?').decode()}" for k in ("d", "s", "a")
    )
    print(f"{'pass' if good else 'fail'} {tags}{why}")
    ok = ok and good
if count == 0:
    print("no DKIM-Signature")
sys.exit(0 if ok else 1)
