-- All scripts: KEYS[1] the job hash. Terminal moves also update KEYS[2] (counts), KEYS[3] (running set) and
-- KEYS[4] (the client's active set); the job id is ARGV[1].
local function terminate(to, fields)
  local from = redis.call('HGET', KEYS[1], 'status')
  redis.call('HSET', KEYS[1], 'status', to, unpack(fields))
  redis.call('HINCRBY', KEYS[2], from, -1)
  redis.call('HINCRBY', KEYS[2], to, 1)
  redis.call('SREM', KEYS[3], ARGV[1])
  redis.call('SREM', KEYS[4], ARGV[1])
end
