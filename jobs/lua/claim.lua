-- ARGV: id, now, owner, lease seconds, takeover ('1'/'0'), exhausted-error JSON, ttl seconds
-- (prefixed with terminate.lua)
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return 'missing' end
if status == 'succeeded' or status == 'failed' or status == 'cancelled' then return 'terminal' end
local now = tonumber(ARGV[2])
if redis.call('HGET', KEYS[1], 'cancel') == '1' then
  terminate('cancelled', {'finished_at', ARGV[2]})
  redis.call('EXPIRE', KEYS[1], tonumber(ARGV[7]))
  return 'cancelled'
end
if status == 'running' and ARGV[5] ~= '1' then
  local owner = redis.call('HGET', KEYS[1], 'lease_owner')
  local lease = tonumber(redis.call('HGET', KEYS[1], 'lease_until') or '0')
  if owner and owner ~= ARGV[3] and owner ~= 'redelivery' and lease > now then return 'busy' end
end
local attempts = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
if attempts > tonumber(redis.call('HGET', KEYS[1], 'max_attempts')) then
  terminate('failed', {'finished_at', ARGV[2], 'error', ARGV[6]})
  redis.call('EXPIRE', KEYS[1], tonumber(ARGV[7]))
  return 'exhausted'
end
if status == 'queued' then
  redis.call('HSET', KEYS[1], 'status', 'running', 'started_at', ARGV[2])
  redis.call('HINCRBY', KEYS[2], 'queued', -1)
  redis.call('HINCRBY', KEYS[2], 'running', 1)
end
redis.call('HSET', KEYS[1], 'lease_owner', ARGV[3], 'lease_until', tostring(now + tonumber(ARGV[4])))
redis.call('SADD', KEYS[3], ARGV[1])
return 'claimed'
