"""The Lua scripts by which a Redis store takes, renews and releases a lease: each runs
atomically on the server, so exactly one of many racing workers wins a run."""

from __future__ import annotations

# KEYS: lease, fence, leased-set; ARGV: run id, worker, ttl ms, expires_at
CLAIM = """
if redis.call('SET', KEYS[1], 'pending', 'NX', 'PX', ARGV[3]) then
  local token = redis.call('INCR', KEYS[2])
  redis.call('SET', KEYS[1], ARGV[2] .. '|' .. token .. '|' .. ARGV[4], 'PX', ARGV[3])
  redis.call('SADD', KEYS[3], ARGV[1])
  return token
end
return false
"""
# KEYS: lease; ARGV: token, ttl ms, worker, expires_at
RENEW = """
local v = redis.call('GET', KEYS[1])
if not v then return 0 end
local _, _, worker, token = string.find(v, '^(.*)|(%d+)|')
if token ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], worker .. '|' .. token .. '|' .. ARGV[4], 'PX', ARGV[2])
return 1
"""
# KEYS: lease; ARGV: token
RELEASE = """
local v = redis.call('GET', KEYS[1])
if v then
  local _, _, token = string.find(v, '|(%d+)|')
  if token == ARGV[1] then redis.call('DEL', KEYS[1]) end
end
return 1
"""
