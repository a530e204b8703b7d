-- KEYS[1]: the idempotency key.  ARGV: the job id it must still name
local value = redis.call('GET', KEYS[1])
if value and cjson.decode(value)[1] == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1
