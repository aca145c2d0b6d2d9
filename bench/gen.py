#!/usr/bin/env python3
"""Generates kubelet-style pods trees of CRI log files for the benchmark.

    gen.py backlog --out DIR --files N --bytes B [--seed S]
        Prefilled files (the drain case): about B bytes of CRI lines across N
        container log files, then stops.
    gen.py write --out DIR --files N --rate R --seconds T [--prefill K]
        Creates N container log files with K lines each, then (after the
        line "ready" on stdin, or at once with --no-wait) appends R lines/s
        in total, round robin, each stamped with the time it is written, for
        T seconds (the steady, idle and many-files cases).

Both print one JSON object on stdout at the end:
    {"files": N, "bytes": .., "lines": .., "records": ..}
`lines` counts physical lines (what a raw shipper sends), `records` logical
lines: a run of `P` parts and the `F` line ending it is one record (what logd
sends). `write` counts the prefill too.

Layout: DIR/<namespace>_<pod>_<uid>/<container>/0.log, as kubelet writes it.
Lines: `<RFC3339Nano> <stdout|stderr> <P|F> <content>`; the timestamp
has containerd's trimmed fraction; 1 file in 8 uses a +02:00 or -05:00 offset
instead of Z. Content is 80-300 bytes per line typically (JSON, klog,
access-log and plain text, some non-ASCII), 1 % multi-KiB lines, and 0.5 %
of messages split into 2-3 `P` parts (sometimes with a line of the other
stream in between). Every logical line stays under the intake's 30 KiB
limit, so no shipper has to cut it.
"""

import argparse
import json
import os
import random
import resource
import sys
import time

NAMESPACES = ["default", "kube-system", "payments", "web", "monitoring", "batch"]
APPS = ["api", "worker", "frontend", "redis", "postgres", "ingress", "auth", "cron"]
CONTAINERS = ["app", "sidecar", "proxy"]
WORDS = (
    "the request was handled by upstream service after retry with backoff "
    "connection pool exhausted waiting for a free slot user session renewed "
    "cache miss for key loading from the database record updated successfully "
    "Überprüfung der Anfrage abgeschlossen 日本語のログメッセージ café naïve "
    "résumé Ωmega ✓ done scheduling pod onto node worker-3 volume attached "
).split()
FILLER = " ".join(WORDS * 100)
PATHS = ["/api/v1/items", "/healthz", "/api/v2/orders", "/login", "/static/app.js"]
METHODS = ["GET", "GET", "GET", "POST", "PUT", "DELETE"]


class Stamper:
    """Formats nanosecond unix times as CRI timestamps in one zone."""

    def __init__(self, offset_minutes):
        self.offset = offset_minutes
        if offset_minutes == 0:
            self.suffix = "Z"
        else:
            sign = "+" if offset_minutes > 0 else "-"
            m = abs(offset_minutes)
            self.suffix = f"{sign}{m // 60:02d}:{m % 60:02d}"
        self._sec = None
        self._prefix = ""

    def format(self, ns):
        sec, frac = divmod(ns, 1_000_000_000)
        if sec != self._sec:
            self._sec = sec
            local = time.gmtime(sec + self.offset * 60)
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", local)
        # containerd (RFC3339Nano) trims trailing zeros of the fraction.
        digits = f"{frac:09d}".rstrip("0")
        if digits:
            return f"{self._prefix}.{digits}{self.suffix}"
        return self._prefix + self.suffix


class Messages:
    """Makes log line contents: (stream, [parts]); one part unless split."""

    def __init__(self, rng):
        self.rng = rng
        self.n = 0

    def filler(self, length):
        start = self.rng.randrange(0, len(FILLER) - length - 1)
        return FILLER[start : start + length]

    def typical(self):
        r = self.rng
        self.n += 1
        kind = self.n % 4
        if kind == 0:
            return (
                '{"level":"info","msg":"request completed","method":"%s","path":"%s/%d",'
                '"status":%d,"duration_ms":%.1f,"trace_id":"%032x","note":"%s"}'
                % (
                    r.choice(METHODS),
                    r.choice(PATHS),
                    r.randrange(100000),
                    r.choice((200, 200, 201, 404, 500)),
                    r.random() * 300,
                    r.getrandbits(128),
                    self.filler(r.randrange(0, 90)),
                )
            )
        if kind == 1:
            return "I1118 08:59:45.%06d       1 controller.go:%d] %s" % (
                r.randrange(1000000),
                r.randrange(1000),
                self.filler(r.randrange(20, 200)),
            )
        if kind == 2:
            return '10.0.%d.%d - - [18/Nov/2024:08:59:45 +0000] "%s %s HTTP/1.1" %d %d "-" "curl/8.4.0"' % (
                r.randrange(256),
                r.randrange(256),
                r.choice(METHODS),
                r.choice(PATHS),
                r.choice((200, 304, 404)),
                r.randrange(100000),
            )
        return self.filler(r.randrange(35, 250))

    def next(self):
        """(stream, parts): the parts of one record, all but the last `P`."""
        r = self.rng
        stream = "stderr" if r.random() < 0.2 else "stdout"
        x = r.random()
        if x < 0.005:
            # A long message the runtime split into partial lines.
            return stream, [self.filler(r.randrange(1000, 8000)) for _ in range(r.randrange(2, 4))]
        if x < 0.015:
            return stream, [self.filler(r.randrange(2000, 16000))]
        return stream, [self.typical()]


class LogFile:
    """One container's 0.log: its zone, its clock and its messages."""

    def __init__(self, path, rng):
        self.path = path
        self.rng = rng
        zone = rng.choice([0] * 7 + [rng.choice((120, -300))])
        self.stamper = Stamper(zone)
        self.messages = Messages(rng)

    def record(self, ns):
        """(lines, records) written at time `ns`: lines end in \\n; records
        is usually 1, 2 when a line of the other stream came between parts."""
        stream, parts = self.messages.next()
        ts = self.stamper.format(ns)
        lines = []
        records = 1
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            lines.append(f"{ts} {stream} {'F' if last else 'P'} {part}\n")
            if not last and self.rng.random() < 0.3:
                other = "stdout" if stream == "stderr" else "stderr"
                lines.append(f"{ts} {other} F {self.messages.typical()}\n")
                records += 1
        return lines, records


def make_tree(out, files, seed):
    """Creates the pod/container dirs; returns one LogFile per container."""
    rng = random.Random(seed)
    logs = []
    pod = 0
    while len(logs) < files:
        ns = NAMESPACES[pod % len(NAMESPACES)]
        app = APPS[pod % len(APPS)]
        uid = "%08x-%04x-4%03x-8%03x-%012x" % (
            rng.getrandbits(32),
            rng.getrandbits(16),
            rng.getrandbits(12),
            rng.getrandbits(12),
            rng.getrandbits(48),
        )
        pod_dir = os.path.join(out, f"{ns}_{app}-{pod:04d}-{rng.getrandbits(20):05x}_{uid}")
        for container in CONTAINERS[: min(rng.randrange(1, 4), files - len(logs))]:
            cdir = os.path.join(pod_dir, container)
            os.makedirs(cdir, exist_ok=True)
            logs.append(LogFile(os.path.join(cdir, "0.log"), random.Random(rng.getrandbits(64))))
        pod += 1
    return logs


def backlog(args):
    logs = make_tree(args.out, args.files, args.seed)
    per_file = args.bytes // args.files
    total = {"files": args.files, "bytes": 0, "lines": 0, "records": 0}
    ns = time.time_ns() - 3600 * 1_000_000_000
    for log in logs:
        t = ns
        chunks, size, lines, records = [], 0, 0, 0
        while size < per_file:
            t += log.rng.randrange(1, 2_000_000)
            rec, n = log.record(t)
            data = "".join(rec).encode()
            chunks.append(data)
            size += len(data)
            lines += len(rec)
            records += n
        with open(log.path, "wb") as f:
            f.write(b"".join(chunks))
        total["bytes"] += size
        total["lines"] += lines
        total["records"] += records
    print(json.dumps(total))


def write(args):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < args.files + 64:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, args.files + 64), hard))
    logs = make_tree(args.out, args.files, args.seed)
    total = {"files": args.files, "bytes": 0, "lines": 0, "records": 0}
    fds = []
    for log in logs:
        fd = os.open(log.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        fds.append(fd)
        for _ in range(args.prefill):
            write_record(fd, log, total)
    sys.stdout.flush()
    if not args.no_wait:
        print("prefilled", file=sys.stderr, flush=True)
        if sys.stdin.readline().strip() != "ready":
            sys.exit("gen.py write: expected 'ready' on stdin")
    start = time.monotonic()
    written = 0
    i = 0
    while True:
        elapsed = time.monotonic() - start
        if elapsed >= args.seconds:
            break
        due = int(elapsed * args.rate)
        # One write(2) per line, as the container runtime does.
        while written < due:
            write_record(fds[i], logs[i], total)
            i = (i + 1) % len(logs)
            written += 1
        time.sleep(0.005)
    for fd in fds:
        os.close(fd)
    print(json.dumps(total))


def write_record(fd, log, total):
    lines, records = log.record(time.time_ns())
    for line in lines:
        data = line.encode()
        os.write(fd, data)
        total["bytes"] += len(data)
    total["lines"] += len(lines)
    total["records"] += records


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("backlog")
    b.add_argument("--out", required=True)
    b.add_argument("--files", type=int, default=40)
    b.add_argument("--bytes", type=int, default=300_000_000)
    b.add_argument("--seed", type=int, default=1)
    w = sub.add_parser("write")
    w.add_argument("--out", required=True)
    w.add_argument("--files", type=int, default=200)
    w.add_argument("--rate", type=float, default=5000)
    w.add_argument("--seconds", type=float, default=60)
    w.add_argument("--prefill", type=int, default=1)
    w.add_argument("--seed", type=int, default=2)
    w.add_argument("--no-wait", action="store_true")
    args = p.parse_args()
    {"backlog": backlog, "write": write}[args.cmd](args)


if __name__ == "__main__":
    main()
