-- wrk script: POST a small JSON body with the bearer token from the environment.
wrk.method = "POST"
wrk.body = '{"hello":"world","n":[1,2,3]}'
wrk.headers["Content-Type"] = "application/json"
local token = os.getenv("BENCH_TOKEN")
if token then
  wrk.headers["Authorization"] = "Bearer " .. token
end
