-- ARGV: id, progress JSON
if redis.call('HGET', KEYS[1], 'status') == 'running' then redis.call('HSET', KEYS[1], 'progress', ARGV[2]) end
return 1
