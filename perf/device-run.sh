#!/usr/bin/env bash
# The runs for a machine with cores (and a disk) to spare (perf/README.md, "On a machine with
# cores to spare"), in one go that fits a ten-minute command, each part under its own timeout, so
# one that stalls costs only its own slot. It builds nothing: give it a release `hewitt-perf`
# built elsewhere. Two sets, chosen by MODE:
#
# - MODE=log (default): [log]'s figures on that machine's disk: the log part (durable append
#   bandwidth against O_DIRECT, acknowledgement latency against the raw open loop) twice
#   through the page cache and twice with `--log-direct-io`, alternating, and the 10 M-record
#   restart;
# - MODE=shards: the 1 -> 2 shard ratio three ways (clients on the node's port, clients on each
#   owner's port, shards parking at once instead of spinning as pinned shards do by default),
#   the curve, and the overload part.
#
#   perf/device-run.sh BINARY [extra report flags…]      e.g. perf/device-run.sh .device/hewitt-perf
#   MODE=shards perf/device-run.sh BINARY
#   SMOKE=1 perf/device-run.sh BINARY                    tiny sizes, to check the script itself
#
# Writes each part's report.md and log to $OUT (or ./device-out), and prints the lines that
# matter, with the machine's CPU topology first (SMT siblings cap what a second shard adds).
set -u
BIN=$(realpath "${1:?usage: perf/device-run.sh BINARY [report flags]}")
shift
OUT=${OUT:-$(pwd)/device-out}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/hewitt-device.XXXXXX")
mkdir -p "$OUT"
if [ -n "${SMOKE:-}" ]; then
    SIZES=(--smoke)
    LIMIT=120
else
    SIZES=(--processes 256 --clients 256 --messages 60000 --engine-messages 40000)
    LIMIT=0
fi

echo "== machine"
nproc
lscpu | grep -E "^(Model name|Thread|Core|Socket|NUMA node)" || true
for cpu in /sys/devices/system/cpu/cpu[0-9]*; do
    printf '%s:%s ' "${cpu##*/}" "$(cat "$cpu/topology/thread_siblings_list" 2>/dev/null)"
done
echo

# run NAME SECONDS FLAGS…: one report, its summary lines, its files copied to $OUT.
run() {
    local name=$1 seconds=$2
    shift 2
    [ "$LIMIT" -gt 0 ] && seconds=$LIMIT
    echo "== $name ($(date +%T), at most ${seconds}s)"
    timeout "$seconds" "$BIN" report --pin "${SIZES[@]}" --work-dir "$WORK" --out "$WORK/out-$name" "$@" \
        >"$OUT/$name.log" 2>&1
    echo "exit $?"
    grep -E "closed loop|overload|Scaling|shards busy|^\| [0-9]|rror" "$OUT/$name.log" | head -40
    cp "$WORK/out-$name/report.md" "$OUT/$name.md" 2>/dev/null || echo "(no report.md)"
    # The log's tables and the verdicts, from the report itself.
    [ -f "$OUT/$name.md" ] && grep -E "^\| (100 B|1 KiB|10 KiB|10 %|50 %) |O_DIRECT|fdatasync \||serving|^- " "$OUT/$name.md" | head -30
}

case "${MODE:-log}" in
log)
    run log-1 110 --parts log "$@"
    run log-direct-1 110 --parts log --log-direct-io "$@"
    run log-2 110 --parts log "$@"
    run log-direct-2 110 --parts log --log-direct-io "$@"
    run big-restart 150 --parts big-restart "$@"
    ;;
shards)
    run ratio 110 --parts scaling --scaling-shards 1,2,1,2,1,2 "$@"
    run ratio-shard-aware 110 --parts scaling --scaling-shards 1,2,1,2,1,2 --shard-aware "$@"
    run ratio-park 110 --parts scaling --scaling-shards 1,2,1,2,1,2 --spin-before-park-us 0 "$@"
    run curve 100 --parts scaling --scaling-shards 1,2,4,8,12,16 "$@"
    run overload 70 --parts overload --shards 8 --overload-clients 8192 "$@"
    ;;
*)
    echo "MODE is log or shards" >&2
    exit 2
    ;;
esac
echo "== end $(date +%T)"
rm -rf "$WORK"
