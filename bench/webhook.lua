-- wrk script for bench/ingest_bench.sh: POSTs pre-signed WhatsApp webhooks
-- (from bench/make_webhooks.py) to /webhook/whatsapp, each with its own
-- message id. Usage: wrk -t T ... -s webhook.lua URL -- BODIES_FILE T
-- Thread k of T sends lines k, k+T, k+2T, ...: the slices are disjoint, so no
-- id repeats within a run unless a thread runs out and wraps (counted below).

local counter = 0
local threads = {}

function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

function init(args)
  local file, nthreads = args[1], tonumber(args[2])
  reqs = {}
  local i = 0
  for line in io.lines(file) do
    if i % nthreads == id then
      local sig, body = line:match("^([^\t]+)\t(.*)$")
      -- Formatted once here: wrk shares the CPU with the servers, keep it cheap.
      reqs[#reqs + 1] = wrk.format("POST", "/webhook/whatsapp",
        {["Content-Type"] = "application/json", ["X-Hub-Signature-256"] = sig}, body)
    end
    i = i + 1
  end
  pool, sent = #reqs, 0
end

function request()
  sent = sent + 1
  return reqs[(sent - 1) % pool + 1]
end

-- One machine-readable line for the driver; latencies in microseconds.
function done(summary, latency, requests)
  local sent_total, pool_total, dups = 0, 0, 0
  for _, t in ipairs(threads) do
    local s, p = t:get("sent"), t:get("pool")
    sent_total, pool_total = sent_total + s, pool_total + p
    if s > p then dups = dups + (s - p) end
  end
  local e = summary.errors
  io.write(string.format(
    "WRK requests=%d duration_us=%d rps=%.1f p50_us=%d p90_us=%d p99_us=%d max_us=%d " ..
    "non2xx=%d connect_errors=%d read_errors=%d write_errors=%d timeouts=%d " ..
    "sent=%d pool=%d duplicates=%d\n",
    summary.requests, summary.duration, summary.requests / (summary.duration / 1e6),
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    e.status, e.connect, e.read, e.write, e.timeout, sent_total, pool_total, dups))
end
