#!/usr/bin/env bash
# The logd benchmark, side by side with syslog-ng (README.md, "Performance").
#
#   bench/run.sh                  # every case, 3 runs each, medians
#   BENCH_RUNS=5 bench/run.sh     # more runs
#   BENCH_QUICK=1 bench/run.sh    # smoke run: smaller data, shorter cases, 1 run
#   BENCH_CASES=drain,idle BENCH_SHIPPERS=logd bench/run.sh   # a subset
#
# Cases: drain, steady, idle, many (the intake answers at once); drain25,
# steady50 (the same, the intake answering each request 25 or 50 ms later:
# test-intake --delay-ms); many2k, many2k50 (1,000 files at 2 lines/s each,
# the intake at 0 and at 50 ms). BENCH_CASES defaults to every case.
#
# Shippers (BENCH_SHIPPERS, default logd,syslog-ng): logd (the HiK8s intake),
# logd-otlp and logd-otlp-gz (the OTLP sink to the test intake's OTLP/HTTP
# receiver, protobuf, without and with gzip), syslog-ng.
#
# Builds the release binaries (logd, test-intake), installs syslog-ng from
# Debian if missing (apt-get; as root, or with sudo), generates the data in a
# temp dir, runs each case for each shipper against the test intake on
# 127.0.0.1, and prints one table. Needs python3. Extra arguments go to
# bench/bench.py (e.g. --keep to keep the temp dirs and the daemons' logs).
set -euo pipefail

cd "$(dirname "$0")/.."

cargo build --release -p logd -p testkit --bins
target="${CARGO_TARGET_DIR:-target}/release"

if ! command -v syslog-ng >/dev/null || ! compgen -G "/usr/lib/syslog-ng/*/libhttp.so" >/dev/null; then
    echo "installing the peer: syslog-ng-core syslog-ng-mod-http (Debian)" >&2
    sudo=""
    if [ "$(id -u)" != 0 ]; then
        command -v sudo >/dev/null || {
            echo "run as root, or install syslog-ng-core and syslog-ng-mod-http first" >&2
            exit 1
        }
        sudo=sudo
    fi
    $sudo apt-get install -y syslog-ng-core syslog-ng-mod-http >/dev/null ||
        { $sudo apt-get update >/dev/null && $sudo apt-get install -y syslog-ng-core syslog-ng-mod-http >/dev/null; }
fi

exec python3 bench/bench.py --logd "$target/logd" --intake "$target/test-intake" "$@"
