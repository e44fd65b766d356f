#!/usr/bin/python3
"""Verify a message with python3-dkim (dkimpy), Debian's independent verifier, the
public keys coming from the command line instead of DNS.

    dkimpy_verify.py dkim|arc MESSAGE_FILE NAME=TXT...

NAME is SELECTOR._domainkey.DOMAIN and TXT the record's text. Line endings are made
CRLF first (smtp-sink dumps with LF).

dkim: every DKIM-Signature; prints one line per signature, "pass d=DOMAIN s=SELECTOR
a=ALGORITHM" or "fail ...", and exits 0 only when there is at least one signature and
all of them pass.
arc: the ARC chain (RFC 8617); prints "cv=RESULT (REASON)", then one line per ARC set,
"i=N d=DOMAIN s=SELECTOR as=VALID ams=VALID cv=CV", and exits 0 only when the chain
validates (cv=pass).
"""
import re
import sys

import dkim

mode = sys.argv[1]
records = {}
for arg in sys.argv[3:]:
    name, _, txt = arg.partition("=")
    records[name.lower().rstrip(".")] = txt.encode()


def dnsfunc(name, timeout=5):
    if isinstance(name, bytes):
        name = name.decode()
    return records.get(name.lower().rstrip("."))


def text(value):
    return value.decode() if isinstance(value, bytes) else str(value)


def verify_dkim(message):
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
    return ok


def verify_arc(message):
    cv, results, reason = dkim.arc_verify(message, dnsfunc=dnsfunc)
    cv = text(cv)  # None: an earlier seal said cv=fail, the chain ended there
    print(f"cv={cv} ({reason})")
    for r in results:
        print(
            f"i={r.get('instance')} d={text(r.get('as-domain'))} s={text(r.get('as-selector'))}"
            f" as={r.get('as-valid')} ams={r.get('ams-valid')} cv={text(r.get('cv'))}"
        )
    return cv == "pass"


with open(sys.argv[2], "rb") as f:
    message = re.sub(rb"\r?\n", b"\r\n", f.read())
ok = {"dkim": verify_dkim, "arc": verify_arc}[mode](message)
sys.exit(0 if ok else 1)
