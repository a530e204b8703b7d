-- ARGV: id, now, ttl seconds
-- (prefixed with terminate.lua)
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return 0 end
if status == 'queued' or status == 'running' then redis.call('HSET', KEYS[1], 'cancel', '1') end
if status == 'queued' then
  terminate('cancelled', {'finished_at', ARGV[2]})
  redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]))
end
return 1
