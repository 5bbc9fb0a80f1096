-- wrk request generator for latchkey's benchmarks.
--   wrk ... -s wrk.lua URL -- me    COOKIE_FILE    : GET with a Cookie line drawn at random per request
--   wrk ... -s wrk.lua URL -- login USERS          : POST /api/auth/login as user<k>@example.com, k random in 1..USERS
-- Requests are built once in init(), so the Lua side costs almost nothing per request.
local pool = {}

function init(args)
  local mode = args[1]
  math.randomseed(os.time() * 1000 + (tonumber(tostring({}):match("0x(%x+)"), 16) or 0) % 1000)
  if mode == "login" then
    local users = tonumber(args[2])
    for _ = 1, 4096 do
      local body = string.format('{"email":"user%d@example.com","password":"password123"}', math.random(1, users))
      pool[#pool + 1] = wrk.format("POST", nil, { ["Content-Type"] = "application/json" }, body)
    end
  else
    for line in io.lines(args[2]) do
      if #line > 0 then
        pool[#pool + 1] = wrk.format("GET", nil, { ["Cookie"] = line })
      end
    end
  end
  assert(#pool > 0, "nothing to send")
end

function request()
  return pool[math.random(#pool)]
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("rps=%.0f p50_ms=%.3f p99_ms=%.3f errors=%d\n",
    summary.requests / (summary.duration / 1e6), latency:percentile(50) / 1000,
    latency:percentile(99) / 1000, e.status + e.connect + e.read + e.write + e.timeout))
end
