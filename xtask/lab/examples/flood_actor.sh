#!/usr/bin/env bash
# An adversary who knows the detector, for `cargo xtask lab --actors FILE`: it sprays fresh
# identities to fill Siphon's entity tables and push a harvester out of them. Every request
# carries a new random API key and User-Agent, half go to random paths, each batch comes from
# another of its addresses and offers another TLS cipher list (another JA4). Requests are tiny
# (max_tokens 1, mostly refused with 401): the flood costs the attacker nothing but requests.
#
# curl runs a batch of BATCH transfers in parallel from one config file, one batch a second. One JSON line per answered request goes to $SIPHON_LAB_LOG
# (the same fields as curl_actor.sh; key_index is the request's number: each key is used once).
# The loop ends at $SIPHON_LAB_DURATION seconds or after MAX_REQUESTS requests.
set -u
: "${SIPHON_LAB_BASE_URL:?}" "${SIPHON_LAB_LOG:?}" "${SIPHON_LAB_DURATION:?}"
IFS=, read -r -a ips <<<"${SIPHON_LAB_SOURCE_IPS:-}"
RANDOM=${SIPHON_LAB_SEED:-1}
MAX_REQUESTS=20000
BATCH=30
# At most BATCH requests a second: enough to overflow a 2,000-entry table in a 150 s lab, not
# so many that the flood starves the lab's two cores (a flood of CPU is not what is tested).
# TLS 1.2 cipher lists: each one is another ClientHello, so another JA4.
ciphers=("ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384"
  "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305"
  "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384"
  "ECDHE-ECDSA-AES128-GCM-SHA256")
hex() { printf '%04x%04x%04x%04x' $RANDOM $RANDOM $RANDOM $RANDOM; }
now() { date +%s.%N; }
end=$(( $(date +%s) + SIPHON_LAB_DURATION ))
cfg=$(mktemp)
out=$(mktemp)
trap 'rm -f "$cfg" "$out"; exit 0' TERM INT
trap 'rm -f "$cfg" "$out"' EXIT
body='{\"model\":\"siphon-lab-1\",\"max_tokens\":1,\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}'
n=0 answered=0 batch=0
while [ "$n" -lt "$MAX_REQUESTS" ] && [ "$(date +%s)" -lt "$end" ]; do
  # One source address and one cipher list (one JA4) per batch.
  ip=""
  if [ "${#ips[@]}" -gt 0 ]; then ip=${ips[$(( batch % ${#ips[@]} ))]}; fi
  cipher=${ciphers[$(( batch % ${#ciphers[@]} ))]}
  : >"$cfg"
  for i in $(seq "$BATCH"); do
    path=/v1/chat/completions
    if [ $(( RANDOM % 2 )) -eq 0 ]; then path=/v1/flood/$(hex); fi
    # curl's config syntax: double-quoted values with backslash escapes; `next` between
    # transfers, and `next` resets every per-transfer option (CA, interface, TLS, timeout,
    # write-out), so each transfer repeats them.
    [ "$i" -gt 1 ] && echo "next" >>"$cfg"
    {
      echo "url = \"$SIPHON_LAB_BASE_URL$path\""
      echo "header = \"Authorization: Bearer sk-flood-$(hex)$(hex)\""
      echo "header = \"Content-Type: application/json\""
      echo "user-agent = \"flood/$(hex)\""
      echo "data = \"$body\""
      echo "output = /dev/null"
      echo "max-time = 60"
      echo "tls-max = 1.2"
      echo "ciphers = \"$cipher\""
      if [ -n "${SIPHON_LAB_CA_FILE:-}" ]; then echo "cacert = \"$SIPHON_LAB_CA_FILE\""; fi
      if [ -n "$ip" ]; then echo "interface = \"$ip\""; fi
      echo "write-out = \"%{http_code} %{size_download} %{time_starttransfer}\\n\""
    } >>"$cfg"
  done
  t0=$(now)
  curl -s --parallel --parallel-max 10 -K "$cfg" >"$out" 2>/dev/null
  t1=$(now)
  while read -r code size ttfb; do
    status=$code
    if [ "$status" = 000 ]; then status=null; else answered=$(( answered + 1 )); fi
    printf '{"ts_start":%s,"ts_end":%s,"actor_id":"%s","kind":"outside","client_lib":"curl","key_index":%d,"source_ip":"%s","status":%s,"stream":false,"max_tokens":1,"response_bytes":%s,"ttfb_s":%s,"error":null}\n' \
      "$t0" "$t1" "${SIPHON_LAB_ACTOR_ID:-flood}" "$n" "$ip" "$status" "${size:-0}" "${ttfb:-null}" \
      >>"$SIPHON_LAB_LOG"
    n=$(( n + 1 ))
  done <"$out"
  batch=$(( batch + 1 ))
  sleep 1
done
echo "flood_actor.sh: $answered of $n requests answered" >&2
[ "$answered" -gt 0 ]
