#!/usr/bin/env python3
"""Peak resident memory of a process tree, from /proc.

usage: rss.py reset PID   -- reset the peak (VmHWM) of PID and all its descendants
       rss.py peak PID    -- print the sum of VmHWM over PID and its descendants, in MiB
       rss.py now PID     -- print the sum of VmRSS (resident now) over PID and its descendants, in MiB
       rss.py cpu PID     -- print the CPU time (user + system) used so far by PID and its
                             descendants, in seconds

Writing 5 to /proc/PID/clear_refs resets VmHWM to the current RSS, so `reset` before a phase and
`peak` after it give the peak of that phase.  For a multi-process peer (nginx master and workers,
squid and its helpers) the sum of per-process peaks is an upper bound of the peak of the sum.
"""
import os
import sys


def children_map():
    kids = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        kids.setdefault(ppid, []).append(int(d))
    return kids


def tree(root):
    kids, out, todo = children_map(), [], [root]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def hwm_kib(pid, field="VmHWM:"):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def main():
    cmd, root = sys.argv[1], int(sys.argv[2])
    pids = tree(root)
    if cmd == "reset":
        for p in pids:
            try:
                with open(f"/proc/{p}/clear_refs", "w") as f:
                    f.write("5")
            except OSError:
                pass
    elif cmd == "peak":
        print(f"{sum(hwm_kib(p) for p in pids) / 1024:.1f}")
    elif cmd == "now":
        print(f"{sum(hwm_kib(p, 'VmRSS:') for p in pids) / 1024:.1f}")
    elif cmd == "cpu":
        total = 0
        for p in pids:
            try:
                with open(f"/proc/{p}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                total += int(fields[11]) + int(fields[12])  # utime, stime
            except OSError:
                pass
        print(f"{total / os.sysconf('SC_CLK_TCK'):.2f}")
    else:
        sys.exit("usage: rss.py reset|peak|now|cpu PID")


if __name__ == "__main__":
    main()
