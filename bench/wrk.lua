-- wrk script of `make bench`: POSTs the body in the file $BENCH_BODY (with the headers in
-- $BENCH_HEADERS) and counts every answer that is not a 200 carrying exactly the bytes in the
-- file $BENCH_EXPECT. done() prints "mismatches: N" and the first mismatching answer of each
-- thread.

local function slurp(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("*a")
  f:close()
  return s
end

wrk.method = "POST"
wrk.body = slurp(os.getenv("BENCH_BODY"))
wrk.headers["Content-Type"] = "application/json"
-- $BENCH_HEADERS: more headers, one "Name: value" a line (they may replace Content-Type)
for name, value in string.gmatch(os.getenv("BENCH_HEADERS") or "", "([^:\n]+): ([^\n]*)") do
  wrk.headers[name] = value
end
local expected = slurp(os.getenv("BENCH_EXPECT"))

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

mismatches = 0
first = ""

function response(status, headers, body)
  if status ~= 200 or body ~= expected then
    mismatches = mismatches + 1
    if first == "" then
      first = status .. " " .. string.sub(body or "", 1, 300)
    end
  end
end

function done(summary, latency, requests)
  local total = 0
  for _, thread in ipairs(threads) do
    local n = thread:get("mismatches")
    total = total + n
    if n > 0 then
      io.write("mismatch: ", thread:get("first"), "\n")
    end
  end
  io.write("mismatches: ", total, "\n")
end
