#!/usr/bin/env bash
# A small outside actor for `cargo xtask lab --actors FILE`: shell + curl, nothing from the
# project. Everything it needs comes from the SIPHON_LAB_* environment the lab sets.
#
#   curl_actor.sh chat   a person's pace: short questions, short answers, 2-6 s apart
#   curl_actor.sh bulk   back to back, long answers (1024-2048 tokens): harvesting
#   ... --misbehave      also leave a process behind in its own session and hang at the end
#                        ignoring SIGTERM: the lab must still kill everything (a test of it)
#
# One JSON line per request goes to $SIPHON_LAB_LOG (ts_start, ts_end, actor_id, key_index,
# source_ip, status, stream, max_tokens, response_bytes, ttfb_s, error). The loop ends at
# $SIPHON_LAB_DURATION seconds or after MAX_REQUESTS requests, whichever comes first.
set -u
mode=${1:-chat}
misbehave=${2:-}
case "$mode" in chat|bulk) ;; *) echo "usage: $0 chat|bulk [--misbehave]" >&2; exit 2 ;; esac
: "${SIPHON_LAB_BASE_URL:?}" "${SIPHON_LAB_KEYS:?}" "${SIPHON_LAB_LOG:?}" "${SIPHON_LAB_DURATION:?}"
IFS=, read -r -a keys <<<"$SIPHON_LAB_KEYS"
IFS=, read -r -a ips <<<"${SIPHON_LAB_SOURCE_IPS:-}"
RANDOM=${SIPHON_LAB_SEED:-1}
MAX_REQUESTS=2000
proxy=()
if [ "${SIPHON_LAB_PATH:-ingress}" = socks ]; then proxy=(--proxy "$SIPHON_LAB_SOCKS_URL"); fi
ca=()
if [ -n "${SIPHON_LAB_CA_FILE:-}" ]; then ca=(--cacert "$SIPHON_LAB_CA_FILE"); fi
now() { date +%s.%N; }
end=$(( $(date +%s) + SIPHON_LAB_DURATION ))
trap 'exit 0' TERM INT
if [ "$misbehave" = --misbehave ]; then
  trap '' TERM                                   # inherited: its children ignore it too
  setsid sleep 3600 </dev/null >/dev/null 2>&1 &  # out of its process group, in its namespace
fi

questions=("What is the capital of Portugal?" "How do I reverse a list in Python?"
  "Suggest a name for a grey cat." "Is 221 a prime number?" "Translate 'good morning' to Italian.")
n=0 ok=0
while [ "$n" -lt "$MAX_REQUESTS" ] && [ "$(date +%s)" -lt "$end" ]; do
  ki=$(( n % ${#keys[@]} ))
  ip=""
  iface=()
  if [ "${#ips[@]}" -gt 0 ]; then ip=${ips[$(( n % ${#ips[@]} ))]}; iface=(--interface "$ip"); fi
  if [ "$mode" = chat ]; then
    q=${questions[$(( RANDOM % ${#questions[@]} ))]}
    max=$(( 16 + RANDOM % 48 ))
  else
    q="Write a long, detailed essay on topic number $n: history, causes, consequences, examples."
    max=$(( 1024 + RANDOM % 1025 ))
  fi
  body="{\"model\":\"siphon-lab-1\",\"max_tokens\":$max,\"messages\":[{\"role\":\"user\",\"content\":\"$q\"}]}"
  t0=$(now)
  res=$(curl -s -o /dev/null "${ca[@]}" "${iface[@]}" "${proxy[@]}" --max-time 60 \
      -H "Authorization: Bearer ${keys[$ki]}" -H 'Content-Type: application/json' \
      -d "$body" -w '%{http_code} %{size_download} %{time_starttransfer}' \
      "$SIPHON_LAB_BASE_URL/v1/chat/completions")
  rc=$?
  t1=$(now)
  read -r code size ttfb <<<"$res"
  err=null
  if [ "$rc" -ne 0 ]; then err="\"curl exit $rc\""; fi
  status=${code:-0}
  if [ "$status" = 000 ] || [ "$status" = 0 ]; then status=null; fi
  [ "$status" = 200 ] && ok=$(( ok + 1 ))
  printf '{"ts_start":%s,"ts_end":%s,"actor_id":"%s","kind":"outside","client_lib":"curl","key_index":%d,"source_ip":"%s","status":%s,"stream":false,"max_tokens":%d,"response_bytes":%s,"ttfb_s":%s,"error":%s}\n' \
    "$t0" "$t1" "${SIPHON_LAB_ACTOR_ID:-curl}" "$ki" "$ip" "$status" "$max" "${size:-0}" "${ttfb:-null}" "$err" \
    >>"$SIPHON_LAB_LOG"
  n=$(( n + 1 ))
  if [ "$mode" = chat ]; then sleep "$(( 2 + RANDOM % 5 ))"; fi
done
echo "curl_actor.sh $mode: $ok of $n requests ok" >&2
if [ "$misbehave" = --misbehave ]; then sleep 3600; fi  # hangs past its duration
[ "$ok" -gt 0 ]
