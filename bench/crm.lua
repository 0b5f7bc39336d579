-- wrk script: POST /v1/crm/track, a distinct contact per request.
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end
local counter = 0
local token = os.getenv("BENCH_TOKEN")
local run = os.getenv("BENCH_RUN") or "0"
function request()
  counter = counter + 1
  local body = string.format(
    '{"type":"signup","props":{"plan":"pro","source":"bench"},"contact":{"email":"u%s-%d-%d@bench.test","name":"Bench"}}',
    run, tid, counter)
  return wrk.format("POST", "/v1/crm/track",
    {["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. token}, body)
end
