-- wrk script for benches/gateway.sh: one MCP request, the same on every
-- connection, to an upstream MCP server, Cola's /mcp/{slug} or Cola's /mcp.
--   WRK_METHOD  tools/call (default) or tools/list
--   WRK_TOOL    the tool tools/call calls (default search)
--   WRK_ARGS    its arguments, a JSON object (default {"query":"cola"})
--   WRK_ERA     modern (2026-07-28: _meta and Mcp-* headers, default) or
--               legacy (2025-11-25, stateless: no session)
--   COLA_BENCH_KEY  sent as the bearer key when set
--   WRK_SESSION sent as Mcp-Session-Id when set (a handshake-era session
--               opened beforehand)
-- WRK_METHOD=GET sends a plain GET (Cola's /health): only its status counts.
-- Every answer is checked: a non-2xx status counts in wrk's own errors, a
-- 2xx whose body is a JSON-RPC error, a failed tool call (isError) or
-- carries no result in rpc_errors.
-- Prints one RESULT line.
local method = os.getenv("WRK_METHOD") or "tools/call"
local tool = os.getenv("WRK_TOOL") or "search"
local args = os.getenv("WRK_ARGS") or '{"query":"cola"}'
local era = os.getenv("WRK_ERA") or "modern"
local key = os.getenv("COLA_BENCH_KEY") or ""
local session = os.getenv("WRK_SESSION") or ""

local params
if method == "tools/call" then
  params = '{"name":"' .. tool .. '","arguments":' .. args
else
  params = '{'
end
if era == "modern" then
  if params ~= '{' then params = params .. ',' end
  params = params .. '"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28",' ..
    '"io.modelcontextprotocol/clientCapabilities":{},' ..
    '"io.modelcontextprotocol/clientInfo":{"name":"wrk","version":"0"}}'
end
params = params .. '}'

if method == "GET" then
  wrk.method = "GET"
else
  wrk.method = "POST"
  wrk.body = '{"jsonrpc":"2.0","id":1,"method":"' .. method .. '","params":' .. params .. '}'
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["Accept"] = "application/json, text/event-stream"
  if key ~= "" then
    wrk.headers["Authorization"] = "Bearer " .. key
  end
  if era == "modern" then
    wrk.headers["MCP-Protocol-Version"] = "2026-07-28"
    wrk.headers["Mcp-Method"] = method
    if method == "tools/call" then
      wrk.headers["Mcp-Name"] = tool
    end
  else
    wrk.headers["MCP-Protocol-Version"] = "2025-11-25"
  end
  if session ~= "" then
    wrk.headers["Mcp-Session-Id"] = session
  end
end

local threads = {}

setup = function(thread)
  table.insert(threads, thread)
end

rpc_errors = 0

response = function(status, headers, body)
  if method ~= "GET" and status >= 200 and status < 300 then
    if body == nil or string.find(body, '"result"', 1, true) == nil
        or string.find(body, '"error":{', 1, true) ~= nil
        or string.find(body, '"isError":true', 1, true) ~= nil then
      rpc_errors = rpc_errors + 1
    end
  end
end

done = function(summary, latency, requests)
  local rpc = 0
  for _, thread in ipairs(threads) do
    rpc = rpc + (thread:get("rpc_errors") or 0)
  end
  local e = summary.errors
  local seconds = summary.duration / 1e6
  io.write(string.format(
    "RESULT requests=%d seconds=%.3f rps=%.1f p50_us=%d p90_us=%d p99_us=%d max_us=%d " ..
    "errors=%d status_errors=%d rpc_errors=%d\n",
    summary.requests, seconds, summary.requests / seconds,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    e.connect + e.read + e.write + e.timeout + e.status, e.status, rpc))
end
