#!/usr/bin/python3
"""A policy server (Postfix's SMTPD_POLICY_README protocol) that records every request.

Usage: policy_recorder.py LOG ACTION...   (LOG "-": record nothing, for benchmarks)

Listens on 127.0.0.1, an ephemeral port, prints "ready PORT" once listening, then
serves any number of connections, each with any number of requests. Every request is
appended to LOG as one JSON object per line (the attributes, in order, plus "_conn":
which connection it came on). The answer to the n-th request of the whole run is
ACTION[n] (the last one repeats): "hang" answers nothing and keeps the connection
open; "close" closes it without answering.
"""
import json
import socket
import sys
import threading

log_path = sys.argv[1]
actions = sys.argv[2:] or ["DUNNO"]
lock = threading.Lock()
counter = {"requests": 0, "connections": 0}


def serve(conn, number):
    try:
        talk(conn, number)
    except OSError:
        pass  # the client went away (as mtad does after a reply it refuses)


def talk(conn, number):
    data = b""
    with conn:
        while True:
            while b"\n\n" not in data:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                data += chunk
            raw, data = data.split(b"\n\n", 1)
            attrs = [line.split(b"=", 1) for line in raw.split(b"\n")]
            record = {k.decode(): v.decode("utf-8", "replace") for k, v in attrs}
            record["_conn"] = number
            with lock:
                n = counter["requests"]
                counter["requests"] += 1
                if log_path != "-":
                    with open(log_path, "a") as log:
                        log.write(json.dumps(record) + "\n")
            action = actions[min(n, len(actions) - 1)]
            if action == "hang":
                threading.Event().wait()
            if action == "close":
                return
            conn.sendall(("action=%s\n\n" % action).encode())


server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("127.0.0.1", 0))
server.listen(16)
print("ready %d" % server.getsockname()[1], flush=True)
while True:
    conn, _ = server.accept()
    with lock:
        counter["connections"] += 1
        number = counter["connections"]
    threading.Thread(target=serve, args=(conn, number), daemon=True).start()
