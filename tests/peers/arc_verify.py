#!/usr/bin/python3
"""Verify the ARC chain (RFC 8617) of a message with python3-dkim (dkimpy), the public
keys coming from the command line instead of DNS.

    arc_verify.py MESSAGE_FILE NAME=TXT...

NAME is SELECTOR._domainkey.DOMAIN and TXT the record's text. Line endings are made
CRLF first (smtp-sink dumps with LF). Prints "cv=RESULT (REASON)", then one line per
ARC set, "i=N d=DOMAIN s=SELECTOR as=VALID ams=VALID cv=CV", and exits 0 only when the
chain validates (cv=pass).
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



def text(value):
    return value.decode() if isinstance(value, bytes) else str(value)


cv, results, reason = dkim.arc_verify(message, dnsfunc=dnsfunc)
cv = text(cv)  # None: an earlier seal said cv=fail, the chain ended there
print(f"cv={cv} ({reason})")

for r in results:
    print(
        f"i={r.get('instance')} d={text(r.get('as-domain'))} s={text(r.get('as-selector'))}"
        f" as={r.get('as-valid')} ams={r.get('ams-valid')} cv={text(r.get('cv'))}"
    )
sys.exit(0 if cv == "pass" else 1)
