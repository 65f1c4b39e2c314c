-- wrk script for the tracker benchmark: compact announces for one info hash (BENCH_HASH,
-- percent-escaped) with a random peer id and a port among BENCH_PORTS, so the requests
-- update the peers of a swarm of that size, pgpod's tracker and opentracker alike.
local hash = os.getenv("BENCH_HASH")
local ports = tonumber(os.getenv("BENCH_PORTS") or "50000")
local counter = 0
function init(args)
  math.randomseed(os.time() + math.floor(os.clock() * 1e6))
end
function request()
  counter = counter + 1
  local id = string.format("-BN0001-%012d", math.random(0, 999999999))
  return wrk.format("GET", "/announce?info_hash=" .. hash .. "&peer_id=" .. id .. "&port=" ..
    math.random(1, ports) .. "&uploaded=0&downloaded=0&left=100&compact=1&numwant=50")
end
function response(status, headers, body)
  if status ~= 200 or not body:find("5:peers") then
    wrk.thread:stop()
  end
end
