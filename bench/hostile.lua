-- wrk script: the attacker of bench/neighbour.sh. POSTs HOSTILE_BODY to the hostile plugin
-- with ATTACK_TOKEN; after a refusal (429) it waits 50 ms before the next request on that
-- connection, so the attack is on the plugin runtime, not a flood of refused requests.
wrk.method = "POST"
wrk.body = os.getenv("HOSTILE_BODY") or '{"mode":"spin"}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("ATTACK_TOKEN")
local wait = 0
function delay() local w = wait; wait = 0; return w end
function response(status, headers, body) if status == 429 then wait = 50 end end
