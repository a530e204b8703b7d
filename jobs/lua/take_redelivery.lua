-- KEYS[2]: undispatched set.  ARGV: id, now, grace seconds
local status = redis.call('HGET', KEYS[1], 'status')
if status == 'running' then
  local lease = tonumber(redis.call('HGET', KEYS[1], 'lease_until') or '0')
  if lease >= tonumber(ARGV[2]) then return 0 end
  redis.call('HSET', KEYS[1], 'lease_owner', 'redelivery', 'lease_until', tostring(tonumber(ARGV[2]) + tonumber(ARGV[3])))
  return 1
end
if status == 'queued' then
  return redis.call('ZREM', KEYS[2], ARGV[1])
end
return 0
