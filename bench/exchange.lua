-- SPDX-License-Identifier: Apache-2.0
-- wrk script: POST /v1/token form bodies, cycling through pre-minted ID tokens.
--
--   wrk -s bench/exchange.lua URL -- TOKENS_FILE AUDIENCE [GHOST_FILE GHOST_EVERY]
--
-- Every request uses the next token of the file (each wrk thread starts at its
-- own offset), so no two requests in a row carry the same token. With a ghost
-- file, every GHOST_EVERY-th request instead carries a token with a kid the
-- issuer does not publish, which makes the broker try a JWKS refetch (rate
-- limited by jwks_min_refetch); those answer 400 and are not counted as
-- exchanges by the driver.
-- Requests are formatted once in init(), so wrk spends its time on sockets.
-- done() prints one line "BENCH_JSON {...}" for bench/bench.py to parse.

local threads = {}
local counter = 0

function setup(thread)
	thread:set("id", counter)
	counter = counter + 1
	table.insert(threads, thread)
end

local function read_lines(path)
	local out = {}
	local f = assert(io.open(path, "r"))
	for line in f:lines() do
		if #line > 0 then
			table.insert(out, line)
		end
	end
	f:close()
	return out
end

local reqs, ghosts = {}, {}
local i, n, every, sent = 0, 0, 0, 0

local function format(token, audience)
	local body = "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange"
		.. "&subject_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Ajwt"
		.. "&audience=" .. audience .. "&subject_token=" .. token
	return wrk.format("POST", "/v1/token", {["Content-Type"] = "application/x-www-form-urlencoded"}, body)
end

function init(args)
	local tokens = read_lines(args[1])
	local audience = args[2]
	for _, t in ipairs(tokens) do
		table.insert(reqs, format(t, audience))
	end
	if args[3] then
		for _, t in ipairs(read_lines(args[3])) do
			table.insert(ghosts, format(t, audience))
		end
		every = tonumber(args[4])
	end
	n = #reqs
	-- spread the threads over the token list
	i = (tonumber(id) or 0) * 997 % n
end

function request()
	sent = sent + 1
	if every > 0 and sent % every == 0 and #ghosts > 0 then
		return ghosts[math.floor(sent / every) % #ghosts + 1]
	end
	i = i % n + 1
	return reqs[i]
end

function done(summary, latency, requests)
	local non2xx = summary.errors.status
	io.write(string.format(
		'BENCH_JSON {"requests":%d,"duration_us":%d,"non2xx":%d,"connect_err":%d,"read_err":%d,'
		.. '"write_err":%d,"timeouts":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,"mean_us":%.1f}\n',
		summary.requests, summary.duration, non2xx, summary.errors.connect, summary.errors.read,
		summary.errors.write, summary.errors.timeout, latency:percentile(50), latency:percentile(90),
		latency:percentile(99), latency.max, latency.mean))
end
