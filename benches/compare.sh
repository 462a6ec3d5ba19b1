#!/usr/bin/env bash
# Times vantage against tshark, tcptrace and tcpdump on a synth capture, and checks that vantage's
# memory stays flat on a 10x larger one. Prints Markdown (machine, commands, tables).
#
#   benches/compare.sh                      # 200MB / 20000 connections, and 2GB
#   SIZE=50MB BIG=500MB REPEAT=1 benches/compare.sh
#
# Two kinds of 10x: BIG is ten times the traffic of the same agents, whose connections come and
# go (so ten times the connections); LONG and LONG_BIG are agents connected all day, so the same
# connections living ten times longer (what a call centre's capture of a whole shift is).
#
# Environment: SIZE (200MB), CONNECTIONS (20000), BIG (2GB; "0" skips the large run), SEED (1),
# NAT (100MB: two captures of CONNECTIONS/2 agents' traffic, either side of a NAT; "0" skips),
# LONG (60MB; "0" skips), LONG_BIG (600MB), LONG_AGENTS (500; their connections live ~55 hours
# on average, so nearly all of them span the capture), BUSY (1: SIZE and BIG again with all
# CONNECTIONS agents connected throughout; "0" skips),
# HUGE (0: skipped; e.g. 20GB, a hundred times SIZE: one diagnosis of the same agents over 19
# hours, with its stages, where what grows with the connections a capture saw shows; 4GB, twenty
# times, shows whether memory still grows past BIG's ten),
# REPEAT (3: the best wall time of REPEAT runs is reported, with the peak RSS of that run),
# INSTALL (1: apt-get install tshark/tcptrace/tcpdump when missing; skipped when that fails),
# TMPDIR (where the captures go; they are removed on exit).
set -euo pipefail
cd "$(dirname "$0")/.."

SIZE=${SIZE:-200MB}
CONNECTIONS=${CONNECTIONS:-20000}
BIG=${BIG:-2GB}
HUGE=${HUGE:-0}
SEED=${SEED:-1}
REPEAT=${REPEAT:-3}
INSTALL=${INSTALL:-1}

TMP=$(mktemp -d "${TMPDIR:-/tmp}/vantage-compare.XXXXXX")
cleanup() { rm -rf "$TMP"; }
trap cleanup EXIT INT TERM

if [ ! -x /usr/bin/time ]; then
    echo "compare.sh: /usr/bin/time (GNU time) is needed: apt-get install time" >&2
    exit 2
fi

# Free space: the big capture plus a margin.
need_kb=$(( $(numfmt --from=auto "${BIG%B}" 2>/dev/null || echo 0) / 1024 + 1024 * 1024 ))
huge_kb=$(( $(numfmt --from=auto "${HUGE%B}" 2>/dev/null || echo 0) / 1024 + 1024 * 1024 ))
[ "$huge_kb" -gt "$need_kb" ] && need_kb=$huge_kb
avail_kb=$(df -Pk "$TMP" | awk 'NR==2 {print $4}')
if [ "$avail_kb" -lt "$need_kb" ]; then
    echo "compare.sh: $TMP has $((avail_kb / 1024)) MB free, need $((need_kb / 1024)) MB; set TMPDIR or BIG" >&2
    exit 2
fi

if [ "$INSTALL" = 1 ]; then
    missing=()
    for t in tshark tcptrace tcpdump; do command -v "$t" >/dev/null || missing+=("$t"); done
    if [ ${#missing[@]} -gt 0 ] && command -v apt-get >/dev/null; then
        echo "compare.sh: installing ${missing[*]}" >&2
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"; } \
            >"$TMP/apt.log" 2>&1 || echo "compare.sh: could not install ${missing[*]}; skipping them" >&2
    fi
fi

cargo build --release --quiet --bin vantage --example synth
VANTAGE=$PWD/target/release/vantage
SYNTH=$PWD/target/release/examples/synth

echo "## Machine"
echo
echo '```'
echo "nproc: $(nproc)"
lscpu | head -n 15
free -m | head -n 2
echo "kernel: $(uname -r)"
echo "load average at start (other work on the machine): $(cut -d' ' -f1-3 /proc/loadavg)"
echo "rustc: $(rustc --version)"
for t in tshark tcptrace tcpdump; do
    if command -v "$t" >/dev/null; then
        case $t in
            tshark) echo "tshark: $(tshark --version 2>/dev/null | head -n 1)" ;;
            tcptrace) echo "tcptrace: $(tcptrace -v 2>&1 | head -n 1)" ;;
            tcpdump) echo "tcpdump: $(tcpdump --version 2>&1 | head -n 1)" ;;
        esac
    else
        echo "$t: not installed (skipped)"
    fi
done
echo "vantage: $(git rev-parse --short HEAD)$(git diff --quiet -- src || echo ' + uncommitted src changes')"
echo '```'
echo

gen() { # gen SIZE FILE [AGENTS [SYNTH ARGS...]]: CONNECTIONS agents by default
    local size=$1 file=$2 agents=${3:-$CONNECTIONS} t0 t1
    shift $(($# < 3 ? $# : 3))
    local args=(--size "$size" --connections "$agents" --seed "$SEED" "$@")
    t0=$(date +%s%N)
    "$SYNTH" "${args[@]}" -o "$file" 2>"$TMP/synth.log"
    t1=$(date +%s%N)
    echo "synth ${args[*]}: $(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.1f", (b-a)/1e9}') s" >&2
    sed 's/^/  /' "$TMP/synth.log" >&2
}

# Hours of traffic, and packets, in the capture gen just wrote.
hours() { awk '/s of traffic/ {printf "%.1f", $2 / 3600}' "$TMP/synth.log"; }
packets() { awk '/packets/ {print $2}' "$TMP/synth.log"; }

# stages FILE ARGS...: one run of vantage ARGS with --stats, its stages as a table: where the
# time and the memory go, stage by stage (each stage's end; peak: the high-water mark so far).
stages() {
    local file=$1 shown
    shift
    shown="$*"
    echo "Stage by stage (\`--stats\`): \`vantage ${shown//$TMP\//}\`"
    echo
    echo "| stage | elapsed s | RSS MiB | peak MiB |"
    echo "|---|---:|---:|---:|"
    "$VANTAGE" --stats "$@" 2>&1 >/dev/null | sed -n '/^vantage: stats$/,$p' | tail -n +3 |
        sed "s|$TMP/||" | awk '{n = NF; s = $1; for (i = 2; i <= n - 3; i++) s = s " " $i;
            printf "| %s | %s | %s | %s |\n", s, $(n - 2), $(n - 1), $n}'
    echo
}

# The header of the tables `measure` fills, a row a command.
table_head() {
    echo "| tool | file MB | wall s | MB/s (wall) | CPU s | MB/s (CPU) | peak RSS MB |"
    echo "|---|---:|---:|---:|---:|---:|---:|"
}

# measure LABEL FILE CMD...: REPEAT runs; prints one table row with the best wall time, the
# least CPU time (user+sys) and the highest peak RSS of those runs. MB/s is given both per wall
# second and per CPU second: on a shared machine the CPU figure is the steadier one.
measure() {
    local label=$1 file=$2
    shift 2
    local bytes best="" best_cpu="" max_rss=0 i t0 t1 wall rss cpu status
    bytes=${BYTES:-$(stat -c %s "$file")}
    cat "$file" >/dev/null # page cache warm: we time parsing, not the disk
    for ((i = 0; i < REPEAT; i++)); do
        t0=$(date +%s%N)
        status=0
        /usr/bin/time -v -o "$TMP/time.txt" "$@" >/dev/null 2>"$TMP/stderr.txt" || status=$?
        t1=$(date +%s%N)
        if [ "$status" -ne 0 ] && [ "$status" -ne 1 ]; then
            echo "compare.sh: $label exited $status: $(tail -n 3 "$TMP/stderr.txt")" >&2
        fi
        wall=$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.3f", (b-a)/1e9}')
        rss=$(awk -F': ' '/Maximum resident set size/ {printf "%.1f", $2/1024}' "$TMP/time.txt")
        cpu=$(awk -F': ' '/User time/ {u=$2} /System time/ {s=$2} END {printf "%.2f", u+s}' "$TMP/time.txt")
        if [ -z "$best" ] || awk -v a="$wall" -v b="$best" 'BEGIN {exit !(a < b)}'; then best=$wall; fi
        if [ -z "$best_cpu" ] || awk -v a="$cpu" -v b="$best_cpu" 'BEGIN {exit !(a < b)}'; then best_cpu=$cpu; fi
        if awk -v a="$rss" -v b="$max_rss" 'BEGIN {exit !(a > b)}'; then max_rss=$rss; fi
    done
    printf '| %s | %s | %s | %s | %s | %s | %s |\n' "$label" \
        "$(awk -v b="$bytes" 'BEGIN {printf "%.0f", b/1e6}')" "$best" \
        "$(awk -v b="$bytes" -v w="$best" 'BEGIN {printf "%.0f", b/1e6/w}')" "$best_cpu" \
        "$(awk -v b="$bytes" -v w="$best_cpu" 'BEGIN {if (w > 0) printf "%.0f", b/1e6/w; else print "-"}')" "$max_rss"
}

SMALL=$TMP/small.pcap
gen "$SIZE" "$SMALL"

echo "## $SIZE capture, $CONNECTIONS connections ($(packets) packets), best of $REPEAT"
echo
table_head
measure "vantage flows" "$SMALL" "$VANTAGE" flows "$SMALL"
measure "vantage flows --format json" "$SMALL" "$VANTAGE" flows --format json "$SMALL"
measure "vantage flows --format json --stream" "$SMALL" "$VANTAGE" flows --format json --stream "$SMALL"
measure "vantage diagnose" "$SMALL" "$VANTAGE" diagnose "$SMALL"
# One core, for issue 8's "1 GB/s on one core" (the rows above use --threads' default).
measure "vantage flows --threads 1" "$SMALL" "$VANTAGE" flows --threads 1 "$SMALL"
measure "vantage diagnose --threads 1" "$SMALL" "$VANTAGE" diagnose --threads 1 "$SMALL"
if command -v tshark >/dev/null; then
    measure "tshark -q -z conv,tcp" "$SMALL" tshark -q -z conv,tcp -r "$SMALL"
fi
if command -v tcptrace >/dev/null; then
    measure "tcptrace -n -l" "$SMALL" tcptrace -n -l "$SMALL"
fi
if command -v tcpdump >/dev/null; then
    measure "tcpdump RST filter -w /dev/null" "$SMALL" tcpdump -r "$SMALL" 'tcp[tcpflags] & tcp-rst != 0' -w /dev/null
fi
echo
stages "$SMALL" diagnose --threads 1 "$SMALL"

if [ "$BIG" != 0 ]; then
    rm -f "$SMALL"
    LARGE=$TMP/large.pcap
    gen "$BIG" "$LARGE"
    echo "## Memory at 10x: $BIG capture, $CONNECTIONS connections ($(packets) packets), one run"
    echo
    table_head
    REPEAT=1 measure "vantage flows" "$LARGE" "$VANTAGE" flows "$LARGE"
    REPEAT=1 measure "vantage flows --format json --stream" "$LARGE" "$VANTAGE" flows --format json --stream "$LARGE"
    REPEAT=1 measure "vantage diagnose" "$LARGE" "$VANTAGE" diagnose "$LARGE"
    REPEAT=1 measure "vantage diagnose --threads 1" "$LARGE" "$VANTAGE" diagnose --threads 1 "$LARGE"
    echo
    stages "$LARGE" diagnose --threads 1 "$LARGE"
    stages "$LARGE" diagnose "$LARGE"
    rm -f "$LARGE"
fi

if [ "$HUGE" != 0 ]; then
    rm -f "$SMALL"
    HUGE_FILE=$TMP/huge.pcap
    gen "$HUGE" "$HUGE_FILE"
    # How many times SIZE (20 for 4GB: past BIG's 10x, where the live connections' state has
    # reached its caps, memory should no longer grow).
    times=$(awk -v h="$(numfmt --from=auto "${HUGE%B}")" -v s="$(numfmt --from=auto "${SIZE%B}")" \
        'BEGIN {printf "%.0f", h/s}')
    echo "## Memory at ${times}x: $HUGE capture, $CONNECTIONS connections ($(packets) packets, $(hours) hours), one run"
    echo
    table_head
    REPEAT=1 measure "vantage diagnose" "$HUGE_FILE" "$VANTAGE" diagnose "$HUGE_FILE"
    REPEAT=1 measure "vantage diagnose --threads 1" "$HUGE_FILE" "$VANTAGE" diagnose --threads 1 "$HUGE_FILE"
    echo
    stages "$HUGE_FILE" diagnose "$HUGE_FILE"
    stages "$HUGE_FILE" diagnose --threads 1 "$HUGE_FILE"
    rm -f "$HUGE_FILE"
fi

NAT=${NAT:-100MB}
if [ "$NAT" != 0 ]; then
    # The same traffic inside and outside a NAT with a 55 s idle timeout, b's clock 1.75 s
    # ahead: the alignment's work (issue 8: several captures decoded in parallel, one thread a
    # file, and lined up).
    A=$TMP/nat_a.pcap B=$TMP/nat_b.pcap
    gen "$NAT" "$B" $((CONNECTIONS / 2)) -o "$A" # synth writes A (inside) and then B
    echo "## Two vantages: $NAT behind a NAT, $((CONNECTIONS / 2)) connections, seen by both, best of $REPEAT"
    echo
    table_head
    measure "vantage diagnose a (one capture)" "$A" "$VANTAGE" diagnose "$A"
    cat "$B" >/dev/null
    BYTES=$(($(stat -c %s "$A") + $(stat -c %s "$B"))) \
        measure "vantage diagnose a=A b=B (both)" "$A" "$VANTAGE" diagnose "a=$A" "b=$B"
    rm -f "$A" "$B"
    echo
fi

# duration_pair TITLE AGENTS SMALL LARGE COMMAND...: one table of one run each, for a capture
# of AGENTS connected throughout (--lifetime 200000) at SMALL and at LARGE, each COMMAND a
# string of vantage's arguments.
duration_pair() {
    local title=$1 agents=$2 small=$3 large=$4 size f h cmd
    shift 4
    echo "## $title, one run each"
    echo
    echo "| tool | hours of traffic | file MB | wall s | MB/s (wall) | CPU s | MB/s (CPU) | peak RSS MB |"
    echo "|---|---|---:|---:|---:|---:|---:|---:|"
    for size in "$small" "$large"; do
        f=$TMP/connected.pcap
        gen "$size" "$f" "$agents" --lifetime 200000
        h=$(hours)
        for cmd in "$@"; do
            # shellcheck disable=SC2086 # cmd is words on purpose
            REPEAT=1 measure "vantage $cmd | $h h" "$f" "$VANTAGE" $cmd "$f"
        done
        rm -f "$f"
    done
    echo
}

LONG=${LONG:-60MB}
LONG_BIG=${LONG_BIG:-600MB}
LONG_AGENTS=${LONG_AGENTS:-500}
if [ "$LONG" != 0 ]; then
    duration_pair "Memory at 10x the duration: $LONG_AGENTS agents connected all day" \
        "$LONG_AGENTS" "$LONG" "$LONG_BIG" \
        "diagnose --threads 1" "flows --format json --stream --threads 1"
fi

BUSY=${BUSY:-1}
if [ "$BUSY" != 0 ] && [ "$BIG" != 0 ]; then
    # The other 10x at full size: every agent of the main capture stays connected, so the 10x
    # capture has the same live connections for ten times as long. Memory must not grow with
    # their age (heartbeat logs, calls: `app::heartbeat::MAX_LOG_EVENTS`).
    duration_pair "Memory at 10x the duration, busy: $CONNECTIONS agents connected throughout" \
        "$CONNECTIONS" "$SIZE" "$BIG" \
        "diagnose --threads 1" "diagnose" "flows --format json --stream"
fi

echo "Commands (FILE is the synth capture):"
echo
echo '```'
echo "$SYNTH --size SIZE --connections $CONNECTIONS --seed $SEED -o FILE"
echo "$SYNTH --size LONG --connections $LONG_AGENTS --seed $SEED --lifetime 200000 -o FILE   # agents connected all day"
echo "$SYNTH --size SIZE --connections $CONNECTIONS --seed $SEED --lifetime 200000 -o FILE   # busy: all connected throughout"
echo "$VANTAGE flows FILE > /dev/null"
echo "$VANTAGE flows --format json FILE > /dev/null"
echo "$VANTAGE flows --format json --stream FILE > /dev/null"
echo "$VANTAGE diagnose FILE > /dev/null"
echo "$SYNTH --size NAT --connections $((CONNECTIONS / 2)) --seed $SEED -o A -o B   # two vantages around a NAT"
echo "$VANTAGE diagnose a=A b=B > /dev/null"
echo "tshark -q -z conv,tcp -r FILE > /dev/null"
echo "tcptrace -n -l FILE > /dev/null   # -n: no reverse DNS (with it, tcptrace waits on DNS time-outs)"
echo "tcpdump -r FILE 'tcp[tcpflags] & tcp-rst != 0' -w /dev/null"
echo "each under /usr/bin/time -v (peak RSS, CPU); wall time from date +%s%N around it; page cache warm"
echo '```'
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
