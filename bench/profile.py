#!/usr/bin/env python3
"""Profiles logd draining a backlog, under perf or callgrind.

    bench/profile.sh perf [MB]       # perf record -g (cpu-clock), then perf report
    bench/profile.sh callgrind [MB]  # valgrind --tool=callgrind: repeatable
                                     # instruction counts, then callgrind_annotate
    bench/profile.sh massif [MB]     # valgrind --tool=massif: heap at its peak

Called by bench/profile.sh with the path of a logd built with symbols. Writes
the profile into bench/out/ (not committed) and prints the top functions.
"""

import os
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import LogdOtlp, MB, Intake, Logd, gen  # noqa: E402


def children(pid):
    kids = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/children") as f:
            kids += [int(p) for p in f.read().split()]
    return kids


def main():
    tool, logd_bin, intake_bin, out_dir = sys.argv[1:5]
    megabytes = int(sys.argv[5]) if len(sys.argv) > 5 else (100 if tool == "perf" else 20)
    os.makedirs(out_dir, exist_ok=True)
    work = tempfile.mkdtemp(prefix="logd-profile-")
    pods = os.path.join(work, "pods")
    manifest = gen("backlog", "--out", pods, "--files", 40, "--bytes", megabytes * MB)
    print(f"backlog: {manifest}", flush=True)
    intake = Intake(intake_bin, work)
    out = os.path.join(out_dir, f"{tool}.out")
    if tool == "perf":
        out = os.path.join(out_dir, "perf.data")
        wrapper = ["perf", "record", "-e", "cpu-clock", "-F", "4999", "-g", "--call-graph", "dwarf,16384", "-o", out, "--"]
    elif tool == "callgrind":
        wrapper = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"]
    elif tool == "massif":
        wrapper = ["valgrind", "--tool=massif", f"--massif-out-file={out}"]
    else:
        sys.exit(f"unknown tool {tool!r}: perf, callgrind or massif")
    # PROFILE_SHIPPER=logd-otlp (or logd-otlp-gz): the OTLP sink.
    shipper = os.environ.get("PROFILE_SHIPPER", "logd")
    logd = LogdOtlp(logd_bin, gzip=shipper.endswith("-gz")) if shipper.startswith("logd-otlp") else Logd(logd_bin)
    env = logd.env(pods, os.path.join(work, "state"), intake)
    started = time.time()
    proc = subprocess.Popen(wrapper + [os.path.abspath(logd_bin)], env=env)
    done = intake.wait_for(lambda c: c.get(logd.delivered_key, 0) >= manifest["records"], 600)
    if done is None:
        print("not all lines delivered in 600 s", file=sys.stderr)
    else:
        print(f"delivered in {done['at'] - started:.2f} s (under {tool})", flush=True)
    target = proc.pid if tool != "perf" else children(proc.pid)[0]
    os.kill(target, signal.SIGTERM)
    proc.wait()
    intake.close()
    print(f"profile: {out}")


if __name__ == "__main__":
    main()
