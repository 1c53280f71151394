#!/usr/bin/env bash
# Hot-path cost in CPU instructions (valgrind callgrind), noise-free on a
# shared machine: the codec (eventbus/benches/codec_instructions.rs) and one
# delivery, memory bus and Redis Streams decode
# (eventbus/benches/delivery_instructions.rs), each against the raw loop
# doing the same work. Every op runs twice, with count 0 and count N; the
# difference divided by N is its instructions per op.
#
#   scripts/instructions.sh                 the table
#   scripts/instructions.sh --check         also: exit 1 if an eventbus op is
#                                           more than 10% above its budget
#   scripts/instructions.sh --write-budget  write the figures as the budget
#
# The budget is scripts/instructions.budget (lines `op instructions`).
set -euo pipefail
cd "$(dirname "$0")/.."

budget_file=scripts/instructions.budget
tolerance=10 # percent above the budget that --check allows

mode=table
case "${1:-}" in
  "") ;;
  --check) mode=check ;;
  --write-budget) mode=write ;;
  -h | --help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) echo "usage: $0 [--check | --write-budget]" >&2; exit 2 ;;
esac

command -v valgrind >/dev/null || { echo "valgrind not found: apt-get install -y valgrind"; exit 1; }

# The bench binaries, as cargo names them (honours CARGO_TARGET_DIR).
exes=$(cargo bench -q -p eventbus --features redis --bench codec_instructions --bench delivery_instructions \
  --no-run --message-format=json-render-diagnostics | grep -o '"executable":"[^"]*"' | cut -d'"' -f4)
declare -A bin
bin[codec]=$(grep '/codec_instructions-' <<<"$exes")
bin[delivery]=$(grep '/delivery_instructions-' <<<"$exes")

# op, bench, count, raw baseline (- for none), budgeted (an eventbus op).
# Counts keep each callgrind run to a few seconds.
ops='
payload-encode         codec    20000 -                      no
encode                 codec    20000 payload-encode         yes
payload-decode         codec    20000 -                      no
decode                 codec    20000 payload-decode         yes
sdk-decode             codec    20000 payload-decode         no
large-payload-encode   codec    20000 -                      no
large-encode           codec    20000 large-payload-encode   yes
large-payload-decode   codec    20000 -                      no
large-decode           codec    20000 large-payload-decode   yes
raw-mpsc               delivery 20000 -                      no
bus                    delivery 20000 raw-mpsc               yes
raw-redis-decode       delivery 10000 -                      no
redis-decode           delivery 10000 raw-redis-decode       yes
raw-redis-decode-batch delivery 20000 -                      no
redis-decode-batch     delivery 20000 raw-redis-decode-batch yes
'

ir() { valgrind --tool=callgrind --callgrind-out-file=/dev/null "$@" 2>&1 | awk '/Collected/ {print $4}'; }

declare -A budget
if [[ -f $budget_file ]]; then
  while read -r op n _; do
    [[ -z $op || $op == \#* ]] || budget[$op]=$n
  done <"$budget_file"
fi

declare -A per
budgeted=() over=()
printf '%-24s %12s  %-24s %7s %12s %8s\n' op instructions/op baseline ratio budget vs-budget
while read -r op bench n base counted; do
  [[ -n $op ]] || continue
  zero=$(ir "${bin[$bench]}" "$op" 0)
  full=$(ir "${bin[$bench]}" "$op" "$n")
  [[ -n $zero && -n $full ]] || { echo "$op: the callgrind run failed" >&2; exit 1; }
  per[$op]=$(((full - zero) / n))
  ratio='' vs='' b=''
  [[ $base == - ]] || ratio=$(awk -v a="${per[$op]}" -v b="${per[$base]}" 'BEGIN {printf "%.2fx", a/b}')
  if [[ $counted == yes ]]; then
    budgeted+=("$op")
    b=${budget[$op]:-}
    if [[ -n $b ]]; then
      vs=$(awk -v a="${per[$op]}" -v b="$b" 'BEGIN {printf "%+.1f%%", (a/b-1)*100}')
      awk -v a="${per[$op]}" -v b="$b" -v t="$tolerance" 'BEGIN {exit !(a > b*(1+t/100))}' && over+=("$op")
    else
      vs='(none)'
    fi
  fi
  printf '%-24s %12d  %-24s %7s %12s %8s\n' "$op" "${per[$op]}" "${base/#-/}" "$ratio" "$b" "$vs"
done <<<"$ops"

awk -v pe="${per[payload-encode]}" -v e="${per[encode]}" -v pd="${per[payload-decode]}" -v d="${per[decode]}" \
  -v lpe="${per[large-payload-encode]}" -v le="${per[large-encode]}" -v lpd="${per[large-payload-decode]}" -v ld="${per[large-decode]}" 'BEGIN {
  printf "round trip (encode + decode) vs payload-only serde_json: %.2fx (moderate_action, 105 B), %.2fx (review_created, 1 KB)\n", (e+d)/(pe+pd), (le+ld)/(lpe+lpd) }'

case $mode in
  write)
    {
      echo "# Instructions per op (callgrind) of the eventbus ops of scripts/instructions.sh;"
      echo "# --check fails when one is more than ${tolerance}% above. Written by --write-budget."
      for op in "${budgeted[@]}"; do echo "$op ${per[$op]}"; done
    } >"$budget_file"
    echo "wrote $budget_file"
    ;;
  check)
    missing=()
    for op in "${budgeted[@]}"; do [[ -n ${budget[$op]:-} ]] || missing+=("$op"); done
    if ((${#over[@]} + ${#missing[@]})); then
      for op in "${over[@]}"; do echo "over budget (> ${tolerance}% above): $op ${per[$op]} instructions/op, budget ${budget[$op]}"; done
      for op in "${missing[@]}"; do echo "no budget: $op"; done
      echo "if the new cost is intended, update the budget: scripts/instructions.sh --write-budget"
      exit 1
    fi
    echo "every eventbus op within ${tolerance}% of $budget_file"
    ;;
esac
