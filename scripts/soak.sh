#!/usr/bin/env bash
# Soak: run the simulated line for an hour with a signed model deploy every
# 10 s and a refused (unauthenticated) command every second; record the
# node's RSS after warm-up and at the end, the inspection results published
# and lost, and panics; print a summary. Not in CI (it takes an hour).
#
#   scripts/soak.sh                                  # 1 h, target/release/triad
#   SOAK_DURATION_S=600 SOAK_WARMUP_S=120 scripts/soak.sh
#   TRIAD_BIN=target/debug/triad scripts/soak.sh
#
# Settings (environment):
#   TRIAD_BIN          the binary (default target/release/triad; build it
#                      with `cargo build --release --workspace --bins`)
#   SOAK_DURATION_S    how long the node runs (3600)
#   SOAK_WARMUP_S      RSS baseline taken this long after start (300)
#   SOAK_DEPLOY_S      one signed deploy every this many seconds (10)
#   SOAK_SCENARIO      the simulated line's scenario (nominal)
#   SOAK_DIR           work directory, kept afterwards (a new mktemp -d)
#   SOAK_RSS_LIMIT_KB  allowed RSS growth from warm-up to end (1024)
#
# A line that stands in the safe state (a watchdog trip when the VM stalls the
# control thread past [control] watchdog_ms) inspects nothing; the soak acts
# as the operator would: a signed ResetFault, then Start, and counts the trips.
#
# Goals (exit status 1 if one is missed): RSS growth <= SOAK_RSS_LIMIT_KB,
# every deploy accepted, every unauthenticated command refused with 401,
# nothing lost (no frame dropped or failed, no publish error, no outbox
# refusal, every inspected frame published), no panic.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin="${TRIAD_BIN:-$root/target/release/triad}"
duration="${SOAK_DURATION_S:-3600}"
warmup="${SOAK_WARMUP_S:-300}"
deploy_every="${SOAK_DEPLOY_S:-10}"
scenario="${SOAK_SCENARIO:-nominal}"
rss_limit="${SOAK_RSS_LIMIT_KB:-1024}"
dir="${SOAK_DIR:-$(mktemp -d -t triad-soak.XXXXXX)}"

[ -x "$bin" ] || { echo "soak: no binary at $bin: cargo build --release --workspace --bins, or set TRIAD_BIN" >&2; exit 2; }
(( warmup < duration )) || { echo "soak: SOAK_WARMUP_S ($warmup) must be shorter than SOAK_DURATION_S ($duration)" >&2; exit 2; }
command -v curl >/dev/null || { echo "soak: curl is needed" >&2; exit 2; }
mkdir -p "$dir"
cd "$root"
echo "soak: $bin, $duration s ($scenario), warm-up $warmup s, a deploy every $deploy_every s; files in $dir"

t() { "$bin" "$@"; }

# Keys and the node's configuration: the built-in one plus the two keys.
t keys gen --name soak-release --uses bundle --out "$dir/keys" --force >/dev/null
t keys gen --name soak-ops --uses deploy --out "$dir/keys" --force >/dev/null
t keys gen --name soak-hmi --uses command --out "$dir/keys" --force >/dev/null
{
  sed -n '/^\[node\]/,$p' edge/src/config/default.toml
  printf '\n[[security.keys]]\nname = "soak-release"\npublic_key_file = "%s"\nuses = ["bundle"]\n' "$dir/keys/soak-release.pub"
  printf '\n[[security.keys]]\nname = "soak-ops"\npublic_key_file = "%s"\nuses = ["deploy"]\n' "$dir/keys/soak-ops.pub"
  printf '\n[[security.keys]]\nname = "soak-hmi"\npublic_key_file = "%s"\nuses = ["command"]\n' "$dir/keys/soak-hmi.pub"
} >"$dir/node.toml"
t check-config "$dir/node.toml" >/dev/null
device="$(sed -n 's/^id = "\(.*\)"/\1/p' "$dir/node.toml" | head -n1)"
cell="$(sed -n 's/^[[:space:]]*id = "\(cell_[^"]*\)"/\1/p' "$dir/node.toml" | head -n1)"
axis="$(sed -n 's/^[[:space:]]*id = "\(axis_[^"]*\)"/\1/p' "$dir/node.toml" | head -n1)"
: "${device:?no [node] id in the configuration}" "${cell:?no cell id}" "${axis:?no axis id}"

port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
node="http://127.0.0.1:$port"
NO_COLOR=1 TRIAD_LOG="${TRIAD_LOG:-info}" "$bin" run --sim --scenario "$scenario" --config "$dir/node.toml" \
  --listen "127.0.0.1:$port" --state-dir "$dir/state" --report "$dir/report.json" \
  >"$dir/node.out" 2>"$dir/node.log" &
pid=$!
cleanup() { kill -INT "$pid" 2>/dev/null || true; }
trap cleanup EXIT

rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0; }
for _ in $(seq 300); do
  curl -fsS -o /dev/null "$node/api/models" 2>/dev/null && break
  kill -0 "$pid" 2>/dev/null || { echo "soak: the node exited at start; see $dir/node.log" >&2; tail -n 20 "$dir/node.log" >&2; exit 1; }
  sleep 0.1
done

# The operator's command: a fresh single-use token each time.
command() {
  t token issue --key "$dir/keys/soak-hmi.key" --issuer soak-operator --device "$device" --use command \
    --axis "$axis" --actions ResetFault,Start --ttl 2m --out "$dir/cmd.jwt" >>"$dir/soak.log" 2>&1 &&
    curl -fsS -X POST -H 'content-type: application/json' -H "authorization: Bearer $(cat "$dir/cmd.jwt")" \
      -d "{\"action\":\"$1\",\"value\":0,\"reason\":\"soak: the operator resets a trip\",\"command_id\":\"soak-$1-$(date +%s%N)\"}" \
      "$node/api/axes/$axis/commands" >>"$dir/soak.log" 2>&1
}
axis_mode() { curl -fsS "$node/api/state" 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["axis"]["mode"])' 2>/dev/null || echo unknown; }

start=$(date +%s)
resets=0 resets_failed=0
deploys_ok=0 deploys_refused=0 refused_401=0 refused_other=0 version=0
rss_warm="" next_deploy=$start
echo "t_s,vmrss_kb" >"$dir/rss.csv"
while :; do
  now=$(date +%s); el=$((now - start))
  (( el >= duration )) && break
  kill -0 "$pid" 2>/dev/null || { echo "soak: the node died after $el s; see $dir/node.log" >&2; break; }
  # A refused request every second: an unauthenticated command.
  code="$(curl -s -o /dev/null -w '%{http_code}' -X POST -H 'content-type: application/json' \
    -d '{"action":"SetRate","value":9,"reason":"soak","command_id":"soak"}' "$node/api/axes/$axis/commands" || true)"
  if [ "$code" = 401 ]; then refused_401=$((refused_401 + 1)); else refused_other=$((refused_other + 1)); echo "soak: command without a token answered $code" >>"$dir/soak.log"; fi
  # A signed deploy every SOAK_DEPLOY_S: build, sign, token, deploy.
  if (( now >= next_deploy )); then
    next_deploy=$((next_deploy + deploy_every))
    version=$((version + 1))
    b="$dir/bundles/weld-1.1.$version"
    rm -rf "$b"
    if t bundle build --from inspect/models/weld_seam --target "$cell" --version "1.1.$version" --out "$b" >>"$dir/soak.log" 2>&1 &&
      t bundle sign "$b" --key "$dir/keys/soak-release.key" >>"$dir/soak.log" 2>&1 &&
      t token issue --key "$dir/keys/soak-ops.key" --issuer soak --device "$device" --use deploy --bundle "$b" --out "$dir/t.jwt" >>"$dir/soak.log" 2>&1 &&
      t deploy --node "$node" --bundle "$b" --token-file "$dir/t.jwt" >>"$dir/soak.log" 2>&1; then
      deploys_ok=$((deploys_ok + 1))
    else
      deploys_refused=$((deploys_refused + 1))
      echo "soak: deploy of 1.1.$version failed (see above)" >>"$dir/soak.log"
    fi
    rm -rf "$b"
    echo "$el,$(rss_kb)" >>"$dir/rss.csv"
  fi
  # A line in the safe state: the operator resets it (every 10 s at most).
  if (( el % 10 == 5 )) && [ "$(axis_mode)" = SafeState ]; then
    if command ResetFault && command Start; then resets=$((resets + 1)); else resets_failed=$((resets_failed + 1)); fi
    echo "soak: $el s: the axis stood in the safe state; reset by the operator" >>"$dir/soak.log"
  fi
  if [ -z "$rss_warm" ] && (( el >= warmup )); then rss_warm=$(rss_kb); echo "soak: RSS after $el s warm-up: $rss_warm kB"; fi
  sleep_to=$((now + 1)); while (( $(date +%s) < sleep_to )); do sleep 0.05; done
done

rss_end=$(rss_kb)
el=$(( $(date +%s) - start ))
echo "$el,$rss_end" >>"$dir/rss.csv"
curl -fsS "$node/metrics" >"$dir/metrics.txt" 2>/dev/null || true
trap - EXIT
kill -INT "$pid" 2>/dev/null || true
wait "$pid" || echo "soak: the node exited with status $?" >&2

python3 - "$dir" "$el" "${rss_warm:-0}" "$rss_end" "$rss_limit" "$deploys_ok" "$deploys_refused" "$refused_401" "$refused_other" "$bin" "$resets" "$resets_failed" <<'EOF'
import json, re, sys
d, el, rss_warm, rss_end, limit, dep_ok, dep_no, r401, rother, binary, resets, resets_failed = sys.argv[1:]
el, rss_warm, rss_end, limit = int(el), int(rss_warm), int(rss_end), int(limit)
dep_ok, dep_no, r401, rother = int(dep_ok), int(dep_no), int(r401), int(rother)
rep = json.load(open(f"{d}/report.json"))
metrics = {}
for line in open(f"{d}/metrics.txt"):
    m = re.match(r'^triad_(\w+?)(?:\{(.*)\})? (\S+)$', line.strip())
    if m:
        metrics[(m.group(1), m.group(2) or "")] = float(m.group(3))
def total(name, label_has=""):
    return int(sum(v for (n, l), v in metrics.items() if n == name and label_has in l))
log = open(f"{d}/node.log", errors="replace").read()
panics = len(re.findall(r"panicked", log))
safe_states = len(re.findall(r"outputs in the safe state", log))
insp = rep["inspection"]
# Frames and published results from the same scrape (just before the stop).
frames_m = total("inspection_frames_total")
published = total("bus_published_messages_total", 'topic="insp/')
lost = {
    "inspection frames dropped": insp["dropped"],
    "inspection errors": insp["errors"],
    "bus publish errors": total("bus_publish_errors_total"),
    "outbox refusals (full)": total("outbox_full_total"),
    "telemetry samples dropped": rep["control"].get("telemetry_dropped", total("control_telemetry_dropped_total")),
}
growth = rss_end - rss_warm
print()
print(f"soak summary ({binary}, {el} s, scenario {rep['scenario']})")
print(f"  RSS after warm-up {rss_warm} kB, at the end {rss_end} kB: growth {growth:+d} kB (goal <= {limit} kB)")
rows = [l.split(",") for l in open(f"{d}/rss.csv").read().split()[1:]]
if rows:
    print(f"  RSS min/max over the run: {min(int(r[1]) for r in rows)} / {max(int(r[1]) for r in rows)} kB ({d}/rss.csv)")
print(f"  deploys accepted {dep_ok}, refused/failed {dep_no}")
print(f"  unauthenticated commands refused with 401: {r401}, other answers: {rother}")
print(f"  frames inspected {insp['frames']} (report); at the last scrape {frames_m} inspected, {published} inspection results published")
for k, v in lost.items():
    print(f"  lost: {k}: {v}")
print(f"  outbox at the end: pending bus {rep['outbox_pending_bus']}, pending mes {rep['outbox_pending_mes']}, dead letters {rep['outbox_dead_letters']}")
print(f"  control: {rep['control']['cycles']} cycles, {rep['control']['overruns']} overruns, jitter p99 {rep['control']['jitter_p99_us']} us")
reasons = sorted(set(re.findall(r'outputs in the safe state axis=\S+ reason="([^"]*)"', log)))
print(f"  panics in the log: {panics}; axis safe-state entries: {safe_states}, reset by the operator {resets} (failed {resets_failed}); reasons: {reasons}")
fails = []
if growth > limit: fails.append(f"RSS grew {growth} kB")
if dep_no or dep_ok == 0: fails.append(f"{dep_no} deploys failed")
if rother or r401 == 0: fails.append(f"{rother} unauthenticated commands not answered 401")
if any(lost.values()): fails.append("something was lost")
# A frame inspected just before the scrape may still be on its way.
if frames_m == 0 or published < frames_m - 5: fails.append(f"{frames_m - published} inspected frames not published")
if panics: fails.append(f"{panics} panics")
if int(resets_failed): fails.append(f"{resets_failed} operator resets failed")
print("  result:", "PASS" if not fails else "FAIL: " + "; ".join(fails))
sys.exit(1 if fails else 0)
EOF
