#!/usr/bin/env bash
# Canary loopers, short mode (`scripts/soak --short`): an engine, an echo upstream and one agent
# per tunnel kind; loopers send random payloads (64 B - 1 MiB, log-uniform) through a private
# tunnel (dialed in-process with rstrm/1 and through rstream-nc), a published tcp, a terminated
# tls and an http tunnel, and compare every byte that comes back. Checked from the script's JSON
# summary: every kind made progress, no mismatch, no unexpected error, every process ran
# throughout and exited 0 on SIGTERM. Bounded in round trips (and 20 s); no timing assertion.
# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need_cmd python3

SOAK="$E2E_DIR/../../scripts/soak"
KINDS=(private nc tcp tls http)

check "scripts/soak --short: loopers through private, nc, tcp, tls and http tunnels"
spawn soak python3 "$SOAK" --short --bin "$RSTREAM_BIN_DIR" --log-dir "$LOGS" --json "$T/soak.json" --progress 5
SOAK_PID=$SPAWNED_PID
wait_exit "$SOAK_PID" 240
sed -n '/^kind /,$p' "$LOGS/soak.log"
[[ -s $T/soak.json ]] || fail "scripts/soak wrote no JSON summary (exit $EXIT_CODE): $(tail -n 3 "$LOGS/soak.err")"

check "every kind made progress, with 0 mismatches and 0 unexpected errors"
rc=0
python3 - "$T/soak.json" "${KINDS[@]}" >"$T/verdict.txt" 2>&1 <<'PYEOF' || rc=$?
import json, sys
summary, kinds = json.load(open(sys.argv[1])), sys.argv[2:]
bad = []
for k in kinds:
    s = summary.get("kinds", {}).get(k)
    if s is None:
        bad.append(f"{k}: not in the summary")
        continue
    print(f"{k}: {s['iterations']} round trips, {s['bytes']} bytes, {s['mismatches']} mismatches, "
          f"{s['errors_unexpected']} unexpected and {s['errors_expected']} expected errors")
    if s["iterations"] <= 0:
        bad.append(f"{k}: no round trip completed")
    if s["mismatches"] != 0:
        bad.append(f"{k}: {s['mismatches']} mismatches: {s['error_samples'].get('mismatch')}")
    if s["errors_unexpected"] != 0:
        bad.append(f"{k}: unexpected errors {s['errors_by_class']['unexpected']}: {s['error_samples']}")
bad += summary.get("failures", [])
for b in bad:
    print("BAD " + b)
sys.exit(1 if bad or not summary.get("pass") else 0)
PYEOF
sed 's/^/  /' "$T/verdict.txt"
((rc == 0)) || fail "soak summary: $(grep -m 3 '^BAD ' "$T/verdict.txt" | tr '\n' ' ')"
((EXIT_CODE == 0)) || fail "scripts/soak exited $EXIT_CODE: $(grep -m 3 'FAIL' "$LOGS/soak.err" | tr '\n' ' ')"
say "all checks passed"
