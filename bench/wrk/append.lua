-- wrk script for the append benchmark (bench/append.py runs it).
--
--   wrk -t T -c C -d D -s bench/wrk/append.lua http://host:port -- \
--       <mode> <tasks-file> <token> <threads> [batch-size] [batch-tasks]
--
-- mode "single": POST /v1/tasks/{id}/events, one progress event per request; each thread walks
--   its own slice of the task list round-robin, so requests in flight at the same moment go to
--   different tasks.
-- mode "batch": POST /v1/events/batch with <batch-size> progress events spread over
--   <batch-tasks> tasks; the answer is parsed and items with status 201 are counted, so the
--   reported events/s only includes events that were really appended.
--
-- done() prints one line "WRKJSON {...}" that bench/append.py parses.

local threads = {}
local next_thread = 0

function setup(thread)
   thread:set("thread_index", next_thread)
   next_thread = next_thread + 1
   table.insert(threads, thread)
end

local mode = "single"
local requests_ = {}
local counter = 0
items_ok = 0
bad_status = 0

local function progress_json(task_id)
   return '{"task_id":"' .. task_id .. '","type":"progress","data":{"percent":12.5,"message":"step"}}'
end

function init(args)
   mode = args[1] or "single"
   local ids = {}
   for line in io.lines(args[2]) do
      if #line > 0 then table.insert(ids, line) end
   end
   local headers = {
      ["Authorization"] = "Bearer " .. args[3],
      ["Content-Type"] = "application/json",
   }
   if mode == "single" then
      local body = '{"type":"progress","data":{"percent":12.5,"message":"step"}}'
      for _, id in ipairs(ids) do
         table.insert(requests_, wrk.format("POST", "/v1/tasks/" .. id .. "/events", headers, body))
      end
   else
      local size = tonumber(args[5] or "100")
      local per = tonumber(args[6] or "10")
      local group = 0
      while (group + 1) * per <= #ids do
         local items = {}
         for i = 0, size - 1 do
            items[#items + 1] = progress_json(ids[group * per + (i % per) + 1])
         end
         local body = '{"events":[' .. table.concat(items, ",") .. ']}'
         table.insert(requests_, wrk.format("POST", "/v1/events/batch", headers, body))
         group = group + 1
      end
   end
   -- threads start at evenly spaced offsets of the request list
   local nthreads = tonumber(args[4] or "1")
   counter = math.floor(thread_index * #requests_ / math.max(1, nthreads))
end

function request()
   counter = counter + 1
   return requests_[(counter % #requests_) + 1]
end

function response(status, headers, body)
   if mode == "batch" then
      if status == 200 then
         local _, n = string.gsub(body, '"status":%s*201', "")
         items_ok = items_ok + n
      else
         bad_status = bad_status + 1
      end
   elseif status == 201 then
      items_ok = items_ok + 1
   else
      bad_status = bad_status + 1
   end
end

function done(summary, latency, requests)
   local ok, bad = 0, 0
   for _, thread in ipairs(threads) do
      ok = ok + (thread:get("items_ok") or 0)
      bad = bad + (thread:get("bad_status") or 0)
   end
   local e = summary.errors
   io.write(string.format(
      'WRKJSON {"requests":%d,"duration_us":%d,"items_ok":%d,"bad_status":%d,' ..
      '"err_connect":%d,"err_read":%d,"err_write":%d,"err_status":%d,"err_timeout":%d,' ..
      '"p50_ms":%.4f,"p90_ms":%.4f,"p99_ms":%.4f,"p99_9_ms":%.4f,"max_ms":%.4f,"mean_ms":%.4f}\n',
      summary.requests, summary.duration, ok, bad,
      e.connect, e.read, e.write, e.status, e.timeout,
      latency:percentile(50) / 1000, latency:percentile(90) / 1000,
      latency:percentile(99) / 1000, latency:percentile(99.9) / 1000,
      latency.max / 1000, latency.mean / 1000))
end
