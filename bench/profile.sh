#!/usr/bin/env bash
# Profiles logd draining a backlog (README.md, "Performance"):
#   bench/profile.sh perf [MB]        perf record -g (cpu-clock; default 100 MB)
#   bench/profile.sh callgrind [MB]   valgrind --tool=callgrind (default 20 MB)
#   bench/profile.sh massif [MB]      valgrind --tool=massif: the heap at its peak
# Builds logd with symbols (a "profiling" profile defined on the command
# line: release settings, not stripped, line tables) into target/profiling/,
# and prints the top functions. Profiles are written to bench/out/.
set -euo pipefail

cd "$(dirname "$0")/.."
tool="${1:?usage: bench/profile.sh perf|callgrind|massif [MB]}"
shift

cargo build -p logd -p testkit --bins \
    --config 'profile.profiling.inherits="release"' \
    --config 'profile.profiling.strip=false' \
    --config 'profile.profiling.debug="line-tables-only"' \
    --profile profiling
bin="${CARGO_TARGET_DIR:-target}/profiling"

python3 bench/profile.py "$tool" "$bin/logd" "$bin/test-intake" bench/out "$@"
case "$tool" in
perf)
    perf report -i bench/out/perf.data --no-children --sort symbol --stdio 2>/dev/null |
        grep -v '^#' | grep '%' | head -40
    ;;
callgrind)
    callgrind_annotate --inclusive=no bench/out/callgrind.out 2>/dev/null | head -60
    ;;
massif)
    ms_print bench/out/massif.out | head -80
    ;;
esac
