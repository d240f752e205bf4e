-- wrk script for bench/webhook.py: sends pre-signed webhook requests, each once.
--
-- BENCH_REQUESTS names a file of lines "webhook-id<TAB>timestamp<TAB>signature<TAB>body";
-- BENCH_THREADS is wrk's -t. Thread k sends lines k, k+T, k+2T, ... and wraps around only if the
-- run outlasts them (the bench sizes the file so it does not, and counts duplicates to check).
-- done() prints one JSON line the bench reads.

local path = os.getenv("BENCH_REQUESTS")
local nthreads = tonumber(os.getenv("BENCH_THREADS"))
local next_tid = 0

function setup(thread)
  thread:set("tid", next_tid)
  next_tid = next_tid + 1
end

local requests = {}
local position = 0

function init(args)
  local n = 0
  for line in io.lines(path) do
    if n % nthreads == tid then
      local id, ts, sig, body = line:match("^([^\t]*)\t([^\t]*)\t([^\t]*)\t(.*)$")
      requests[#requests + 1] = wrk.format("POST", "/webhooks/clever", {
        ["Content-Type"] = "application/json",
        ["webhook-id"] = id,
        ["webhook-timestamp"] = ts,
        ["webhook-signature"] = sig,
      }, body)
    end
    n = n + 1
  end
end

function request()
  position = position + 1
  if position > #requests then
    position = 1
  end
  return requests[position]
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests":%d,"duration_us":%d,"p50_us":%d,"p99_us":%d,"max_us":%d,' ..
    '"non_2xx":%d,"connect":%d,"read":%d,"write":%d,"timeout":%d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    latency.max, e.status, e.connect, e.read, e.write, e.timeout))
end
