#!/usr/bin/env bash
# Codec cost in CPU instructions (valgrind callgrind): noise-free ratios of
# the CloudEvents codec to serde_json of the payload alone.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { echo "valgrind not found: apt-get install -y valgrind"; exit 1; }
cargo bench -q -p eventbus --bench codec_instructions --no-run
bin=$(ls -t target/release/deps/codec_instructions-* | grep -v '\.d$' | head -1)
N=20000
ir() { valgrind --tool=callgrind --callgrind-out-file=/dev/null "$bin" "$1" "$2" 2>&1 | awk '/Collected/ {print $4}'; }
declare -A per
for op in payload-encode encode payload-decode decode sdk-decode large-payload-encode large-encode large-payload-decode large-decode; do
  base=$(ir "$op" 0); full=$(ir "$op" $N)
  per[$op]=$(( (full - base) / N ))
  printf '%-16s %8d instructions/op\n' "$op" "${per[$op]}"
done
awk -v pe="${per[payload-encode]}" -v e="${per[encode]}" -v pd="${per[payload-decode]}" -v d="${per[decode]}" -v s="${per[sdk-decode]}" \
    -v lpe="${per[large-payload-encode]}" -v le="${per[large-encode]}" -v lpd="${per[large-payload-decode]}" -v ld="${per[large-decode]}" 'BEGIN {
  printf "small payload (moderate_action, 105 B): encode %.2fx, decode %.2fx (cloudevents-sdk Event %.2fx), roundtrip %.2fx payload-only\n", e/pe, d/pd, s/pd, (e+d)/(pe+pd)
  printf "1 KB payload (review_created):          encode %.2fx, decode %.2fx, roundtrip %.2fx payload-only\n", le/lpe, ld/lpd, (le+ld)/(lpe+lpd) }'
