#!/usr/bin/env python3
"""Prints the CPU seconds (user + system) used by process PID and all its descendants,
sampling /proc every half second until PID exits (fuzz/run.sh hours: afl-fuzz, its
fork server and the persistent target, which time(1) cannot see: afl kills the fork
server without the target being waited for). Children that live less than a sample
apart are missed, so the figure errs low."""
import os
import sys
import time

root = int(sys.argv[1])
tick = os.sysconf("SC_CLK_TCK")
seen = {}  # (pid, start time) -> ticks


def stat(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            s = f.read()
    except OSError:
        return None
    fields = s[s.rindex(")") + 2:].split()
    # after the command: state ppid ... utime(12) stime(13) ... starttime(20)
    return int(fields[1]), int(fields[11]) + int(fields[12]), fields[19]


while True:
    procs = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = stat(int(name))
            if st:
                procs[int(name)] = st
    if root not in procs:
        break
    tree = {root}
    grew = True
    while grew:
        grew = False
        for pid, (ppid, _, _) in procs.items():
            if ppid in tree and pid not in tree:
                tree.add(pid)
                grew = True
    for pid in tree:
        _, ticks, start = procs[pid]
        seen[(pid, start)] = max(ticks, seen.get((pid, start), 0))
    time.sleep(0.5)
print(sum(seen.values()) // tick)
