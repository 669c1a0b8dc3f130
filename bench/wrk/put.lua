-- PUT of a 100-byte value to a random key among KEYS (same as redis-benchmark -d 100 -r).
local keys = tonumber(os.getenv("KEYS") or "100000")
local value = string.rep("v", 100)
request = function()
  return wrk.format("PUT", "/v1/kv/key:" .. math.random(0, keys - 1), nil, value)
end
