-- wrk script for benches/load.sh.
-- WRK_MODE=mcp: POST /mcp tools/call whoami with the key in COLA_BENCH_KEY;
-- WRK_MODE=verify: POST /api/mcp/verify of that key with the server token in
-- COLA_BENCH_SERVER_TOKEN, for one tool;
-- otherwise plain GET of the URL given to wrk. Prints one RESULT line.
local mode = os.getenv("WRK_MODE") or "get"

if mode == "mcp" then
  wrk.method = "POST"
  wrk.body = '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"whoami","arguments":{}}}'
  wrk.headers["Authorization"] = "Bearer " .. (os.getenv("COLA_BENCH_KEY") or "")
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["Accept"] = "application/json, text/event-stream"
  wrk.headers["mcp-protocol-version"] = "2025-11-25"
elseif mode == "verify" then
  wrk.method = "POST"
  wrk.body = '{"key":"' .. (os.getenv("COLA_BENCH_KEY") or "") ..
    '","client_ip":"203.0.113.7","tool":"search_code"}'
  wrk.headers["Authorization"] = "Bearer " .. (os.getenv("COLA_BENCH_SERVER_TOKEN") or "")
  wrk.headers["Content-Type"] = "application/json"
end

done = function(summary, latency, requests)
  local e = summary.errors
  local seconds = summary.duration / 1e6
  io.write(string.format(
    "RESULT requests=%d seconds=%.3f rps=%.1f p50_us=%d p90_us=%d p99_us=%d max_us=%d " ..
    "errors=%d status_errors=%d\n",
    summary.requests, seconds, summary.requests / seconds,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    e.connect + e.read + e.write + e.timeout + e.status, e.status))
end
