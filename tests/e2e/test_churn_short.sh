#!/usr/bin/env bash
# Stream churn, short mode (`scripts/soak churn --short`): 2 rounds of 1,000 streams (connect,
# one byte each way, then a half-close, a plain close or a reset) through a published tcp
# tunnel and 200 through a private one. After each round (and a bounded settle wait) the
# engine's and the agents' open file descriptors and CLOSE_WAIT sockets must be back exactly
# at the baseline taken after a warm-up. VmRSS is reported, not checked (meaningless under
# AddressSanitizer; the long mode on a Release build checks it). No timing assertion.
# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need_cmd python3 ss

SOAK="$E2E_DIR/../../scripts/soak"

check "scripts/soak churn --short: 2 rounds of 1000 tcp and 200 private streams"
spawn churn python3 "$SOAK" churn --short --bin "$RSTREAM_BIN_DIR" --log-dir "$LOGS" --json "$T/churn.json"
CHURN_PID=$SPAWNED_PID
wait_exit "$CHURN_PID" 240
sed -n '/^round /,$p' "$LOGS/churn.log"
[[ -s $T/churn.json ]] || fail "scripts/soak churn wrote no JSON summary (exit $EXIT_CODE): $(tail -n 3 "$LOGS/churn.err")"

check "every stream went through (no mismatch, no unexpected error); fds and CLOSE_WAIT back at the baseline after each round"
rc=0
python3 - "$T/churn.json" >"$T/verdict.txt" 2>&1 <<'PYEOF' || rc=$?
import json, sys
summary = json.load(open(sys.argv[1]))
bad = []
rounds, baseline = summary.get("rounds", []), summary.get("baseline", {})
if len(rounds) != 2:
    bad.append(f"{len(rounds)} rounds in the summary, expected 2")
for r in rounds:
    for kind in ("tcp", "private"):
        s = r["kinds"].get(kind)
        if s is None:
            bad.append(f"round {r['round']}: no {kind} streams")
            continue
        if s["iterations"] <= 0:
            bad.append(f"round {r['round']} {kind}: no stream completed")
        if s["mismatches"] or s["errors_unexpected"]:
            bad.append(f"round {r['round']} {kind}: {s['mismatches']} mismatches, unexpected errors "
                       f"{s['errors_by_class']['unexpected']}: {s['error_samples']}")
    for name, b in baseline.items():
        a = r["after"][name]
        print(f"round {r['round']} {name}: fds {b['fds']} -> {a['fds']}, close-wait {b['close_wait']} -> "
              f"{a['close_wait']}, VmRSS {b['rss_kib']} -> {a['rss_kib']} KiB")
        if a["fds"] != b["fds"]:
            bad.append(f"round {r['round']}: {name} holds {a['fds']} fds after settling, {b['fds']} at the baseline")
        if a["close_wait"] != b["close_wait"]:
            bad.append(f"round {r['round']}: {name} has {a['close_wait']} CLOSE_WAIT sockets after settling, "
                       f"{b['close_wait']} at the baseline")
for name in ("engine", "fwd-tcp", "fwd-private"):
    if name not in baseline:
        bad.append(f"{name} was not watched")
bad += summary.get("failures", [])
for b in bad:
    print("BAD " + b)
sys.exit(1 if bad or not summary.get("pass") else 0)
PYEOF
sed 's/^/  /' "$T/verdict.txt"
((rc == 0)) || fail "churn summary: $(grep -m 3 '^BAD ' "$T/verdict.txt" | tr '\n' ' ')"
((EXIT_CODE == 0)) || fail "scripts/soak churn exited $EXIT_CODE: $(grep -m 3 'FAIL' "$LOGS/churn.err" | tr '\n' ' ')"
say "all checks passed"
