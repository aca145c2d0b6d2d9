#!/usr/bin/env python3
"""Runs the benchmark cases for logd and syslog-ng and prints one table.

Called by bench/run.sh (which builds the binaries and installs the peer);
see README.md, "Performance". Every figure is measured from outside the
shipper's process:

- CPU: utime + stime of /proc/<pid>/stat (all threads, 1/CLK_TCK s).
- Peak RSS: VmHWM of /proc/<pid>/status.
- Wake-ups: voluntary + nonvoluntary context switches summed over
  /proc/<pid>/task/*/status, over the idle window.
- Delivered lines and the time of the last one: the test intake's counters
  (its stderr), stamped by the intake itself.
- Latency (logd only: the intake keeps /logs lines, not /raw ones): the
  intake's --latency percentiles, receive time minus the line's timestamp.
- In flight: the most data requests the intake was handling at once.

A case may put the intake some way off (test-intake --delay-ms: each request
is answered that much later, concurrent ones independently), to show what a
shipper's requests in flight are worth against a distant intake.

Each case runs BENCH_RUNS times per shipper (fresh intake, fresh state);
the table shows the median of each figure.
"""

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")
HERE = os.path.dirname(os.path.abspath(__file__))
GEN = os.path.join(HERE, "gen.py")
MB = 1_000_000
MiB = 1024 * 1024


# ---------------------------------------------------------------- /proc


def stat_cpu(path):
    """(command name, user + system CPU seconds) from a /proc stat file."""
    with open(path) as f:
        # The command name may contain spaces: fields start after its ')'.
        head, fields = f.read().rsplit(")", 1)
    fields = fields.split()
    return head.split("(", 1)[1], (int(fields[11]) + int(fields[12])) / CLK_TCK


def cpu_seconds(pid):
    """User + system CPU seconds of the whole process (every thread)."""
    return stat_cpu(f"/proc/{pid}/stat")[1]


def thread_cpu(pid):
    """{thread name: CPU seconds} of the live threads (what `top -H` shows)."""
    threads = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            name, cpu = stat_cpu(f"/proc/{pid}/task/{tid}/stat")
        except (FileNotFoundError, ProcessLookupError):
            continue  # the thread ended meanwhile
        threads[name] = threads.get(name, 0) + cpu
    return threads


def status_field(path, name):
    with open(path) as f:
        for line in f:
            if line.startswith(name + ":"):
                return int(line.split()[1])
    raise KeyError(name)


def peak_rss_mib(pid):
    return status_field(f"/proc/{pid}/status", "VmHWM") / 1024


def context_switches(pid):
    """{thread id: voluntary + involuntary context switches} of live threads."""
    switches = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        path = f"/proc/{pid}/task/{tid}/status"
        try:
            switches[tid] = status_field(path, "voluntary_ctxt_switches") + status_field(
                path, "nonvoluntary_ctxt_switches"
            )
        except (FileNotFoundError, ProcessLookupError):
            pass  # the thread ended meanwhile
    return switches


def switches_between(before, after):
    """Context switches between two snapshots, summed over threads: a thread
    started in between counts from 0; one that ended in between is missed
    (so this can only undercount a shipper that churns threads)."""
    return sum(n - before.get(tid, 0) for tid, n in after.items())


def stop(proc, grace=15):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# ---------------------------------------------------------------- intake


class Intake:
    """A test-intake process and the latest counters it printed."""

    def __init__(self, binary, logdir, latency=False, delay_ms=0):
        args = [binary, "--interval-ms", "1000" if latency else "5"]
        args.append("--latency" if latency else "--count-only")
        if delay_ms:
            args += ["--delay-ms", str(delay_ms)]
        self.stderr_path = os.path.join(logdir, "intake.stderr")
        self.proc = subprocess.Popen(
            args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        line = self.proc.stdout.readline()
        if not line.startswith("listening on "):
            raise RuntimeError(f"test-intake did not start: {line!r}")
        self.url = line.split()[-1]
        self.cond = threading.Condition()
        self.counters = {"log_lines": 0, "raw_lines": 0, "at": time.time(), "statuses": ""}
        self.latency = None
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        with open(self.stderr_path, "w", buffering=1) as log:
            for line in self.proc.stderr:
                log.write(line)
                parsed = parse_intake_line(line)
                if parsed is None:
                    continue
                with self.cond:
                    kind, values = parsed
                    if kind == "counters":
                        self.counters = values
                    else:
                        self.latency = values
                    self.cond.notify_all()

    def wait_for(self, predicate, timeout):
        """The first counters satisfying `predicate`, or None at `timeout`."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while not predicate(self.counters):
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    return None
                self.cond.wait(left)
            return dict(self.counters)

    def latest(self):
        with self.cond:
            return dict(self.counters), self.latency

    def reset_latency(self):
        self.proc.stdin.write("reset\n")
        self.proc.stdin.flush()

    def close(self):
        stop(self.proc, grace=2)


def parse_intake_line(line):
    words = line.split()
    if line.startswith("latency ms"):
        return "latency", {
            "lines": int(words[words.index("lines") + 1]),
            "p50": float(words[words.index("p50") + 1]),
            "p99": float(words[words.index("p99") + 1]),
            "max": float(words[words.index("max") + 1]),
        }
    if line.startswith("log lines"):
        return "counters", {
            "log_lines": int(words[2]),
            "raw_lines": int(words[8]),
            "otlp_records": int(words[words.index("otlp") + 2]) if "otlp" in words else 0,
            "in_flight": int(words[words.index("flight") + 1]),
            "at": float(words[words.index("at") + 1]),
            "statuses": " ".join(words[words.index("status") + 1 : words.index("at")]),
        }
    return None


# ---------------------------------------------------------------- shippers


class Logd:
    name = "logd"
    delivered_key = "log_lines"

    def __init__(self, binary):
        self.binary = binary

    def expected(self, manifest):
        """logd ships a partial line's parts as one line."""
        return manifest["records"]

    @staticmethod
    def env(pods, state, intake):
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HIK8S_URL": intake.url,
            "HIK8S_TOKEN": "static-test-token",
            "LOGD_PODS_DIR": pods,
            "LOGD_STATE_DIR": state,
            "LOGD_METRICS_ADDR": "off",
            "RUST_LOG": "warn",
        }

    def start(self, pods, state, intake, logdir):
        env = self.env(pods, state, intake)
        # Extra settings to try (e.g. LOGD_BATCH_LINGER_MS=500), space-separated.
        env.update(kv.split("=", 1) for kv in os.environ.get("BENCH_LOGD_ENV", "").split())
        return spawn([self.binary], env, logdir, "logd")


class LogdOtlp(Logd):
    """logd with the OTLP sink, to the test intake's OTLP/HTTP receiver
    (protobuf; `gzip` compresses)."""

    delivered_key = "otlp_records"

    def __init__(self, binary, gzip=False):
        super().__init__(binary)
        self.gzip = gzip
        self.name = "logd-otlp-gz" if gzip else "logd-otlp"

    def env(self, pods, state, intake):
        env = Logd.env(pods, state, intake)
        del env["HIK8S_URL"], env["HIK8S_TOKEN"]
        env["HIK8S_SINK"] = "otlp"
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = intake.url
        env["OTEL_EXPORTER_OTLP_COMPRESSION"] = "gzip" if self.gzip else "none"
        return env


class SyslogNg:
    name = "syslog-ng"
    delivered_key = "raw_lines"

    def __init__(self, binary, conf):
        self.binary = binary
        self.conf = conf

    def expected(self, manifest):
        """syslog-ng sends every physical line, `P` parts included."""
        return manifest["lines"]

    def start(self, pods, state, intake, logdir):
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PODS": pods,
            "RAW_URL": intake.url + "/raw",
            "TOKEN": "static-test-token",
        }
        args = [
            self.binary, "-F", "-e", "--no-caps", "-f", self.conf,
            "-R", os.path.join(state, "persist"),
            "-p", os.path.join(state, "pid"),
            "-c", os.path.join(state, "ctl"),
        ]  # fmt: skip
        return spawn(args, env, logdir, "syslog-ng")


def spawn(args, env, logdir, name):
    out = open(os.path.join(logdir, f"{name}.log"), "a")
    return subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


# ---------------------------------------------------------------- data


def gen(*args):
    out = subprocess.run([sys.executable, GEN, *map(str, args)], check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


class Writer:
    """gen.py write: prefills the files, then writes at a rate on 'ready'."""

    def __init__(self, pods, files, rate, seconds, prefill=1):
        self.proc = subprocess.Popen(
            [sys.executable, GEN, "write", "--out", pods, "--files", str(files),
             "--rate", str(rate), "--seconds", str(seconds), "--prefill", str(prefill)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        line = self.proc.stderr.readline()
        if line.strip() != "prefilled":
            raise RuntimeError(f"gen.py write failed: {line}{self.proc.stderr.read()}")

    def go(self):
        self.proc.stdin.write("ready\n")
        self.proc.stdin.flush()

    def wait(self):
        out, err = self.proc.communicate()
        if self.proc.returncode != 0:
            raise RuntimeError(f"gen.py write failed: {err}")
        return json.loads(out)


# ---------------------------------------------------------------- cases


class Run:
    """One shipper's run of a case: a temp dir, an intake, the process."""

    def __init__(self, bench, shipper, latency=False, delay_ms=0):
        self.bench = bench
        self.shipper = shipper
        self.dir = tempfile.mkdtemp(prefix=f"{shipper.name}-", dir=bench.workdir)
        self.state = os.path.join(self.dir, "state")
        os.makedirs(self.state)
        self.intake = Intake(bench.intake_bin, self.dir, latency, delay_ms)
        self.proc = None

    def start(self, pods):
        self.started = time.time()
        self.proc = self.shipper.start(pods, self.state, self.intake, self.dir)
        return self.proc.pid

    def delivered(self, counters):
        return counters.get(self.shipper.delivered_key, 0)

    def wait_delivered(self, n, timeout):
        """Counters once `n` lines are delivered, or None at `timeout`."""
        return self.intake.wait_for(lambda c: self.delivered(c) >= n, timeout)

    def wait_progressing(self, n, stall):
        """Counters once `n` lines are delivered, or None once `stall` seconds
        pass without a line delivered: against a distant intake a shipper
        with few requests in flight can take minutes to catch up, and is
        slow, not lossy."""
        seen = -1
        while True:
            counters = self.intake.wait_for(lambda c: self.delivered(c) >= n or self.delivered(c) > seen, stall)
            if counters is None or self.delivered(counters) >= n:
                return counters
            seen = self.delivered(counters)

    def in_flight(self):
        """The most requests the intake had in flight at once so far."""
        counters, _ = self.intake.latest()
        return counters.get("in_flight", 0)

    def check_alive(self):
        if self.proc.poll() is not None:
            raise RuntimeError(f"{self.shipper.name} exited with {self.proc.returncode}; see {self.dir}")

    def close(self):
        if self.proc is not None:
            stop(self.proc)
        self.intake.close()
        if not self.bench.keep:
            shutil.rmtree(self.dir, ignore_errors=True)


def requests_answered(intake):
    """Data requests the intake answered so far, whatever the status."""
    counters, _ = intake.latest()
    return sum(int(pair.split(":")[1]) for pair in counters["statuses"].split() if ":" in pair)


def lost_and_dup(expected, delivered):
    return max(0, expected - delivered), max(0, delivered - expected)


def drain(bench, shipper, delay_ms=0):
    manifest = bench.backlog
    expected = shipper.expected(manifest)
    run = Run(bench, shipper, delay_ms=delay_ms)
    try:
        pid = run.start(bench.backlog_dir)
        done = run.wait_delivered(expected, bench.drain_timeout)
        cpu, rss = cpu_seconds(pid), peak_rss_mib(pid)
        if done is None:
            run.check_alive()
            counters, _ = run.intake.latest()
            elapsed = counters["at"] - run.started
        else:
            elapsed = done["at"] - run.started
        # Anything beyond `expected` is a repeat; give repeats a moment.
        run.intake.wait_for(lambda c: False, 0.5)
        counters, _ = run.intake.latest()
        lost, dup = lost_and_dup(expected, run.delivered(counters))
        return {
            "MB/s": manifest["bytes"] / MB / elapsed,
            "lines/s": manifest["lines"] / elapsed,
            "CPU-s/100MB": cpu / (manifest["bytes"] / (100 * MB)),
            "peak RSS MiB": rss,
            "lost": lost,
            "dup": dup,
            "seconds": elapsed,
            "in flight": run.in_flight(),
        }
    finally:
        run.close()


def rate_case(bench, shipper, files, rate, seconds, delay_ms=0):
    """Steady writing: CPU % of one core and RSS while `rate` lines/s are
    written across `files` files for `seconds`; latency; lines lost."""
    run = Run(bench, shipper, latency=True, delay_ms=delay_ms)
    writer = None
    try:
        pods = os.path.join(run.dir, "pods")
        writer = Writer(pods, files, rate, seconds, prefill=1)
        pid = run.start(pods)
        # Ready once the prefill (one line a file) is delivered.
        if run.wait_progressing(files, 120) is None:
            run.check_alive()
            raise RuntimeError(f"{shipper.name}: prefill not delivered; see {run.dir}")
        run.intake.wait_for(lambda c: False, 1.5)  # settle: linger, checkpoint
        run.intake.reset_latency()
        requests0 = requests_answered(run.intake)
        cpu0, t0, threads0 = cpu_seconds(pid), time.monotonic(), thread_cpu(pid)
        writer.go()
        manifest = writer.wait()
        cpu1, t1, threads1 = cpu_seconds(pid), time.monotonic(), thread_cpu(pid)
        requests = requests_answered(run.intake) - requests0
        per_thread = {name: 100 * (cpu - threads0.get(name, 0)) / (t1 - t0) for name, cpu in threads1.items()}
        shown = ", ".join(f"{name} {pct:.1f}" for name, pct in sorted(per_thread.items(), key=lambda kv: -kv[1]))
        print(f"    {shipper.name} CPU % by thread: {shown}", flush=True)
        rss = peak_rss_mib(pid)
        expected = shipper.expected(manifest)
        done = run.wait_progressing(expected, 60)
        # The latency line that follows the last delivery.
        if done is not None and shipper.delivered_key == "log_lines":
            want = expected - files
            run.intake.wait_for(lambda c: (run.intake.latency or {}).get("lines", 0) >= want, 5)
        counters, latency = run.intake.latest()
        lost, dup = lost_and_dup(expected, run.delivered(counters))
        written_bytes = manifest["bytes"]
        result = {
            "CPU %": 100 * (cpu1 - cpu0) / (t1 - t0),
            "CPU-s/100MB": (cpu1 - cpu0) / (written_bytes / (100 * MB)),
            "peak RSS MiB": rss,
            "lost": lost,
            "dup": dup,
            "in flight": counters.get("in_flight", 0),
            "req/s": requests / (t1 - t0),
        }
        if shipper.delivered_key == "log_lines" and latency:
            result["p99 ms"] = latency["p99"]
            result["p50 ms"] = latency["p50"]
        return result
    finally:
        if writer is not None and writer.proc.poll() is None:
            writer.proc.kill()
        run.close()


def idle(bench, shipper, files=200, window=10):
    """Wake-ups per second while `files` files are tracked and none grows."""
    run = Run(bench, shipper)
    try:
        pods = os.path.join(run.dir, "pods")
        manifest = gen("write", "--out", pods, "--files", files, "--seconds", 0, "--prefill", 5, "--no-wait")
        pid = run.start(pods)
        if run.wait_delivered(shipper.expected(manifest), 120) is None:
            run.check_alive()
            raise RuntimeError(f"{shipper.name}: files not delivered; see {run.dir}")
        # Let the batch linger and the checkpoint write pass.
        run.intake.wait_for(lambda c: False, 3)
        cpu0, ctx0, t0 = cpu_seconds(pid), context_switches(pid), time.monotonic()
        run.intake.wait_for(lambda c: False, window)  # the measurement window
        cpu1, ctx1, t1 = cpu_seconds(pid), context_switches(pid), time.monotonic()
        return {
            "wake-ups/s": switches_between(ctx0, ctx1) / (t1 - t0),
            "threads ended": len(set(ctx0) - set(ctx1)),
            "CPU %": 100 * (cpu1 - cpu0) / (t1 - t0),
            "peak RSS MiB": peak_rss_mib(pid),
        }
    finally:
        run.close()


# ---------------------------------------------------------------- table

COLUMNS = [
    ("MB/s", "{:.0f}"),
    ("lines/s", "{:,.0f}"),
    ("CPU-s/100MB", "{:.2f}"),
    ("CPU %", "{:.1f}"),
    ("peak RSS MiB", "{:.1f}"),
    ("wake-ups/s", "{:.1f}"),
    ("p99 ms", "{:.0f}"),
    ("in flight", "{:.0f}"),
    ("req/s", "{:.1f}"),
    ("lost", "{:.0f}"),
    ("dup", "{:.0f}"),
]


def median_of(runs):
    keys = {k for r in runs for k in r}
    return {k: statistics.median(r[k] for r in runs if k in r) for k in keys}


def table(rows):
    header = ["case", "shipper"] + [c for c, _ in COLUMNS]
    body = []
    for case, shipper, m in rows:
        cells = [case, shipper]
        for col, fmt in COLUMNS:
            cells.append(fmt.format(m[col]) if col in m else "-")
        body.append(cells)
    widths = [max(len(r[i]) for r in [header] + body) for i in range(len(header))]
    lines = ["| " + " | ".join(h.ljust(w) for h, w in zip(header, widths)) + " |"]
    lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in body:
        cells = [r[0].ljust(widths[0]), r[1].ljust(widths[1])]
        cells += [c.rjust(w) for c, w in zip(r[2:], widths[2:])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def check_targets(results, quick):
    """The issue's targets for logd, PASS/FAIL each."""
    checks = []

    def get(case, shipper, col):
        return results.get((case, shipper), {}).get(col)

    def check(what, value, ok):
        if value is not None:
            checks.append(f"{'PASS' if ok(value) else 'FAIL'}  {what}: {value:.2f}")

    d = drain_label(backlog_mb(quick))
    check("drain MB/s >= 250", get(d, "logd", "MB/s"), lambda v: v >= 250)
    check("drain CPU-s/100MB <= 0.2", get(d, "logd", "CPU-s/100MB"), lambda v: v <= 0.2)
    check("drain peak RSS MiB <= 12", get(d, "logd", "peak RSS MiB"), lambda v: v <= 12)
    ours, peer = get(d, "logd", "MB/s"), get(d, "syslog-ng", "MB/s")
    if ours and peer:
        check("drain throughput / syslog-ng's >= 6", ours / peer, lambda v: v >= 6)
    ours, peer = get(d, "logd", "peak RSS MiB"), get(d, "syslog-ng", "peak RSS MiB")
    if ours and peer:
        check("drain RSS / syslog-ng's <= 0.1", ours / peer, lambda v: v <= 0.1)
    s = STEADY
    check("steady CPU % of a core <= 3", get(s, "logd", "CPU %"), lambda v: v <= 3)
    check("steady peak RSS MiB <= 8", get(s, "logd", "peak RSS MiB"), lambda v: v <= 8)
    check("steady latency p99 ms <= linger + 250 = 1250", get(s, "logd", "p99 ms"), lambda v: v <= 1250)
    check("idle wake-ups/s <= 1", get("idle", "logd", "wake-ups/s"), lambda v: v <= 1)
    small, big = get(MANY_SMALL, "logd", "CPU %"), get(MANY_BIG, "logd", "CPU %")
    if small and big:
        check("many files: CPU(1000 files) / CPU(250 files) <= 4 (linear)", big / small, lambda v: v <= 4)
    small, big = get(MANY_SMALL, "logd", "peak RSS MiB"), get(MANY_BIG, "logd", "peak RSS MiB")
    if small and big:
        check("many files: RSS(1000 files) / RSS(250 files) <= 4 (linear)", big / small, lambda v: v <= 4)
    near, far = get(MANY_2K, "logd", "CPU %"), get(MANY_2K_FAR, "logd", "CPU %")
    if near and far:
        check("many2k: CPU(intake 50 ms) / CPU(intake 0 ms) <= 1.25", far / near, lambda v: v <= 1.25)
    check("many2k, intake 50 ms: latency p99 ms <= 1500", get(MANY_2K_FAR, "logd", "p99 ms"), lambda v: v <= 1500)
    for (case, shipper), m in sorted(results.items()):
        if m.get("lost", 0) > 0:
            checks.append(f"NOTE  {case} / {shipper}: {m['lost']:.0f} lines lost (median)")
    return checks


def backlog_mb(quick):
    return 30 if quick else 300


def drain_label(mb):
    return f"drain {mb} MB, 40 files"


def at_delay(label, delay_ms):
    """A row's label with the intake's delay, for the cases that set one."""
    return f"{label}, intake {delay_ms} ms"


STEADY = "steady 5k lines/s, 200 files"
MANY_SMALL = "many: 250 files x 10 lines/s"
MANY_BIG = "many: 1000 files x 10 lines/s"
MANY_2K_LABEL = "many: 1000 files x 2 lines/s"
MANY_2K = at_delay(MANY_2K_LABEL, 0)
MANY_2K_FAR = at_delay(MANY_2K_LABEL, 50)
DEFAULT_CASES = "drain,steady,idle,many,drain25,steady50,many2k,many2k50"


class Case:
    """A benchmark case: `name` selects it (BENCH_CASES), `label` names its
    rows, `delay_ms` is how much later the intake answers each request, and
    `run(shipper, delay_ms)` runs it once and returns its figures."""

    def __init__(self, name, label, run, delay_ms=0):
        self.name = name
        self.label = label
        self.run = run
        self.delay_ms = delay_ms

    def __call__(self, shipper):
        return self.run(shipper, self.delay_ms)


def plan_cases(bench, quick):
    """Every case, in the order they run: each delayed case after the case
    it is compared with."""
    steady_secs = 10 if quick else 60
    many_secs = 8 if quick else 30

    def drain_case(shipper, delay_ms):
        return drain(bench, shipper, delay_ms)

    def rate(files, lines_per_sec, seconds):
        return lambda shipper, delay_ms: rate_case(bench, shipper, files, lines_per_sec, seconds, delay_ms)

    def many2k(name, delay_ms):
        return Case(name, at_delay(MANY_2K_LABEL, delay_ms), rate(1000, 2000, many_secs), delay_ms)

    cases = [
        Case("drain", drain_label(bench.backlog_mb), drain_case),
        Case("drain25", at_delay(drain_label(bench.backlog_mb), 25), drain_case, 25),
        Case("steady", STEADY, rate(200, 5000, steady_secs)),
        Case("steady50", at_delay(STEADY, 50), rate(200, 5000, steady_secs), 50),
        Case("idle", "idle", lambda shipper, _: idle(bench, shipper)),
    ]
    if not quick:
        cases.append(Case("many", MANY_SMALL, rate(250, 2500, many_secs)))
    cases += [Case("many", MANY_BIG, rate(1000, 10000, many_secs)), many2k("many2k", 0), many2k("many2k50", 50)]
    return cases


def machine():
    model = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{os.cpu_count()} CPUs ({model}), Linux {platform.release()}, load {os.getloadavg()[0]:.2f}"


class Bench:
    def __init__(self, args):
        self.intake_bin = args.intake
        self.keep = args.keep
        self.workdir = tempfile.mkdtemp(prefix="logd-bench-")
        self.quick = args.quick
        self.drain_timeout = 600


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--logd", required=True)
    p.add_argument("--intake", required=True)
    p.add_argument("--syslog-ng", default=shutil.which("syslog-ng"))
    p.add_argument("--syslog-ng-conf", default=os.path.join(HERE, "syslog-ng.conf"))
    p.add_argument("--runs", type=int, default=int(os.environ.get("BENCH_RUNS", "3")))
    p.add_argument("--quick", action="store_true", default=os.environ.get("BENCH_QUICK") == "1")
    p.add_argument("--cases", default=os.environ.get("BENCH_CASES", DEFAULT_CASES))
    p.add_argument("--shippers", default=os.environ.get("BENCH_SHIPPERS", "logd,syslog-ng"))
    p.add_argument("--keep", action="store_true", help="keep the temp dirs (logs, state)")
    args = p.parse_args()

    bench = Bench(args)
    shippers = [
        s
        for s in (
            Logd(args.logd),
            LogdOtlp(args.logd),
            LogdOtlp(args.logd, gzip=True),
            SyslogNg(args.syslog_ng, args.syslog_ng_conf),
        )
        if s.name in args.shippers.split(",")
    ]
    quick = args.quick
    runs = 1 if quick else args.runs
    bench.backlog_mb = backlog_mb(quick)
    wanted = args.cases.split(",")
    every = plan_cases(bench, quick)
    unknown = set(wanted) - {case.name for case in every}
    if unknown:
        sys.exit(f"unknown cases {sorted(unknown)}; known: {DEFAULT_CASES}")
    plan = [case for case in every if case.name in wanted]

    print(f"machine: {machine()}", flush=True)
    print(f"runs per case: {runs}{' (quick)' if quick else ''}; work dir {bench.workdir}", flush=True)

    results = {}
    rows = []
    try:
        if any(case.name.startswith("drain") for case in plan):
            # One backlog for the drain cases: the same data near and far.
            bench.backlog_dir = os.path.join(bench.workdir, "backlog")
            bench.backlog = gen(
                "backlog", "--out", bench.backlog_dir, "--files", 40, "--bytes", bench.backlog_mb * MB
            )
            print(f"backlog: {json.dumps(bench.backlog)}", flush=True)
        for case in plan:
            for shipper in shippers:
                per_run = []
                for i in range(runs):
                    r = case(shipper)
                    shown = ", ".join(f"{k} {v:.2f}" for k, v in sorted(r.items()))
                    print(f"  {case.label} / {shipper.name} run {i + 1}: {shown}", flush=True)
                    per_run.append(r)
                results[(case.label, shipper.name)] = median_of(per_run)
                rows.append((case.label, shipper.name, results[(case.label, shipper.name)]))
    finally:
        if not bench.keep:
            shutil.rmtree(bench.workdir, ignore_errors=True)

    print()
    print(f"machine: {machine()}")
    print(table(rows))
    print()
    for line in check_targets(results, quick):
        print(line)


if __name__ == "__main__":
    main()
