#!/usr/bin/env bash
# Counts the instructions of a one-thread diagnosis of a synth capture, stage by stage, with
# valgrind's callgrind. Instruction counts are the same from run to run where wall times are
# not (a shared VM drifts by 20 %, and has no performance counters for `perf stat`), so this is
# how a change to the per-packet path is measured here (benches/RESULTS.md, session 14).
# Prints Markdown: the total, per packet, and each stage's inclusive count.
#
#   benches/instructions.sh                          # 200MB / 20000 connections (~1 minute)
#   SIZE=30MB CONNECTIONS=2000 benches/instructions.sh
#   VANTAGE=/path/to/other/vantage benches/instructions.sh   # another build, the same capture
#
# Environment: SIZE (200MB), CONNECTIONS (20000), SEED (1), VANTAGE (the release build),
# KEEP (a directory to leave the callgrind output in), TMPDIR (where the capture goes).
set -euo pipefail
cd "$(dirname "$0")/.."

SIZE=${SIZE:-200MB}
CONNECTIONS=${CONNECTIONS:-20000}
SEED=${SEED:-1}

for t in valgrind callgrind_annotate; do
    if ! command -v "$t" >/dev/null; then
        echo "instructions.sh: $t is needed: apt-get install valgrind" >&2
        exit 2
    fi
done

TMP=$(mktemp -d "${TMPDIR:-/tmp}/vantage-instructions.XXXXXX")
cleanup() { rm -rf "$TMP"; }
trap cleanup EXIT INT TERM

# Built on its own, as `cargo build --release` builds it: in one invocation with the example,
# the example's dev-dependencies could change the features the library is compiled with.
cargo build --release --quiet --bin vantage
cargo build --release --quiet --example synth
VANTAGE=${VANTAGE:-$PWD/target/release/vantage}
SYNTH=$PWD/target/release/examples/synth

CAP=$TMP/synth.pcap
"$SYNTH" --size "$SIZE" --connections "$CONNECTIONS" --seed "$SEED" -o "$CAP" >"$TMP/synth.log" 2>&1
PKTS=$(awk '/packets/ {print $2; exit}' "$TMP/synth.log")

OUT=$TMP/callgrind.out
valgrind --tool=callgrind --callgrind-out-file="$OUT" \
    "$VANTAGE" diagnose --threads 1 "$CAP" >/dev/null 2>"$TMP/valgrind.log"
callgrind_annotate --inclusive=yes --threshold=100 "$OUT" >"$TMP/inclusive.txt" 2>/dev/null
if [ -n "${KEEP:-}" ]; then
    mkdir -p "$KEEP" && cp "$OUT" "$KEEP/"
fi

# count FUNCTION: the inclusive instruction count of a function (0 if it never ran).
count() {
    awk -v f="$1" 'index($0, f " [") { gsub(",", "", $1); print $1; found = 1; exit }
        END { if (!found) print 0 }' "$TMP/inclusive.txt"
}

total=$(awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1; exit }' "$TMP/inclusive.txt")
frames=$(count "vantage::pipeline::read_frames")
finish=$(count "vantage::tcp::Tracker::finish_kept")
rules=$(count "vantage::diagnose::diagnose_with")

row() { # LABEL COUNT
    awk -v l="$1" -v n="$2" -v t="$total" -v p="$PKTS" \
        'BEGIN { printf "| %s | %.0f M | %.0f | %.1f %% |\n", l, n / 1e6, n / p, 100 * n / t }'
}

echo "## Instructions: \`vantage diagnose --threads 1\`, $SIZE synth ($PKTS packets, $CONNECTIONS agents)"
echo
echo "$("$VANTAGE" --version), valgrind $(valgrind --version | sed 's/valgrind-//'); callgrind, inclusive counts"
echo
echo "| stage | instructions | a packet | share |"
echo "|---|---:|---:|---:|"
row "everything" "$total"
row "the frame loop: reading, decoding, tracking, the application layer (\`read_frames\`)" "$frames"
row "summarising the connections live at the end (\`finish_kept\`)" "$finish"
row "rules and rendering (\`diagnose_with\`)" "$rules"
row "the rest: alignment, the report, start-up" "$((total - frames - finish - rules))"
echo
echo "Inside the frame loop, \`callgrind_annotate --inclusive=yes --tree=calling\` on the kept"
echo "output (\`KEEP=DIR\`) splits it further; a function the compiler inlined counts in its caller."
echo
echo "Commands:"
echo
echo '```'
echo "$SYNTH --size $SIZE --connections $CONNECTIONS --seed $SEED -o FILE"
echo "valgrind --tool=callgrind --callgrind-out-file=OUT $VANTAGE diagnose --threads 1 FILE"
echo "callgrind_annotate --inclusive=yes --threshold=100 OUT"
echo '```'
