-- GET of a random key among KEYS (all written first by the PUT run).
local keys = tonumber(os.getenv("KEYS") or "100000")
request = function()
  return wrk.format("GET", "/v1/kv/key:" .. math.random(0, keys - 1))
end
