-- ARGV: id, status, now, result JSON, error JSON, ttl seconds, owner ('' for any)
-- (prefixed with terminate.lua)
local status = redis.call('HGET', KEYS[1], 'status')
if not status or status == 'succeeded' or status == 'failed' or status == 'cancelled' then return 0 end
if ARGV[7] ~= '' and redis.call('HGET', KEYS[1], 'lease_owner') ~= ARGV[7] then return 0 end
terminate(ARGV[2], {'finished_at', ARGV[3], 'result', ARGV[4], 'error', ARGV[5]})
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[6]))
return 1
