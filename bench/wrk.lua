-- wrk script of `npm run bench` (bench/generator.ts runs it):
--   wrk -t1 -c50 -d2s -s bench/wrk.lua URL -- [method=POST] [body=FILE] [tokens=FILE]
-- method/body: a fixed request (wrk builds it once and resends the same bytes: the cheapest load).
-- tokens: a file of access tokens, one a line; every request carries the next one as
--   `Authorization: Bearer <token>`, each token once. Should the file run out, the last token is
--   repeated and counted in `tokensOver` (the bench then reports the run as RAN OUT).
-- done() prints one line `BENCHJSON {...}`: the counts and latency percentiles (microseconds).

local function readfile(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("*a")
  f:close()
  return s
end

-- Per thread (the bench runs one): read by done() through thread:get().
used = 0
over = 0
count = 0
local tokens

function init(args)
  for _, a in ipairs(args) do
    local k, v = a:match("^(%w+)=(.*)$")
    if k == "method" then
      wrk.method = v
    elseif k == "body" then
      wrk.body = readfile(v)
    elseif k == "tokens" then
      tokens = {}
      for line in io.lines(v) do
        if #line > 0 then
          count = count + 1
          tokens[count] = line
        end
      end
    end
  end
  if tokens then
    -- A global `request` makes wrk call it for every request (otherwise the request is static).
    request = function()
      used = used + 1
      local t
      if used > count then
        over = over + 1
        t = tokens[count]
      else
        t = tokens[used]
      end
      wrk.headers["Authorization"] = "Bearer " .. t
      return wrk.format()
    end
  end
end

local threads = {}
function setup(thread)
  table.insert(threads, thread)
end

function done(summary, latency, requests)
  local u, o = 0, 0
  for _, t in ipairs(threads) do
    u = u + (t:get("used") or 0)
    o = o + (t:get("over") or 0)
  end
  local e = summary.errors
  io.write(string.format(
    'BENCHJSON {"requests":%d,"durationUs":%d,"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d,"p50":%d,"p90":%d,"p99":%d,"max":%d,"tokensUsed":%d,"tokensOver":%d}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, u, o))
end
