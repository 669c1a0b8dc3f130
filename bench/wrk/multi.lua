-- Shared by the cluster benchmark: ringkv or etcd (JSON gateway), PUT or GET,
-- chosen by the MODE environment variable: ringkv-put, ringkv-get, etcd-put, etcd-get.
local keys = tonumber(os.getenv("KEYS") or "100000")
local mode = os.getenv("MODE") or "ringkv-put"
local value = string.rep("v", 100)

local b64chars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
local function b64(data)
  return ((data:gsub(".", function(x)
    local r, b = "", x:byte()
    for i = 8, 1, -1 do r = r .. (b % 2 ^ i - b % 2 ^ (i - 1) > 0 and "1" or "0") end
    return r
  end) .. "0000"):gsub("%d%d%d?%d?%d?%d?", function(x)
    if #x < 6 then return "" end
    local c = 0
    for i = 1, 6 do c = c + (x:sub(i, i) == "1" and 2 ^ (6 - i) or 0) end
    return b64chars:sub(c + 1, c + 1)
  end) .. ({ "", "==", "=" })[#data % 3 + 1])
end

local value64 = b64(value)
local headers = { ["Content-Type"] = "application/json" }

request = function()
  local key = "key:" .. math.random(0, keys - 1)
  if mode == "ringkv-put" then
    return wrk.format("PUT", "/v1/kv/" .. key, nil, value)
  elseif mode == "ringkv-get" then
    return wrk.format("GET", "/v1/kv/" .. key)
  elseif mode == "etcd-put" then
    return wrk.format("POST", "/v3/kv/put", headers,
      '{"key":"' .. b64(key) .. '","value":"' .. value64 .. '"}')
  else
    return wrk.format("POST", "/v3/kv/range", headers, '{"key":"' .. b64(key) .. '"}')
  end
end
