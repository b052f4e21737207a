"""Transaction status cache: Redis when configured, a bounded in-memory map otherwise.

Three key families per ledger, each with a TTL so nothing grows without bound: `p` (accepted,
pending), `c` (committed: "height:index") and `i` (invalid: reason). A lookup reads all three and
the strongest wins (Committed > Invalid > Pending), so events can arrive in any order, from any
number of executors, and resubmissions can never downgrade a committed transaction. An invalid
entry is stored as "code\nmessage".

Redis writes are one server-side script call per chunk of keys rather than one SET per key:
redis-py spends ~25 µs of gateway CPU building and parsing each command, which made the status
cache half of the gateway's cost per transaction (docs/performance.md). The keys, values and
TTLs written are exactly those of per-key `SET key value EX ttl [NX]`.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from conclavium.runtime import redis_from_url

DEFAULT_TTL_S = 24 * 3600
SCRIPT_CHUNK = 1000  # keys per script call: bounds how long one call holds Redis (~1 ms)

# KEYS = the keys; ARGV = ttl, nx ("1"/"0"), then one value per key. Same effect as per-key SETs.
SET_MANY_LUA = """
local ttl, nx = ARGV[1], ARGV[2] == '1'
for i = 1, #KEYS do
  if nx then
    redis.call('SET', KEYS[i], ARGV[i + 2], 'EX', ttl, 'NX')
  else
    redis.call('SET', KEYS[i], ARGV[i + 2], 'EX', ttl)
  end
end
return #KEYS
"""


def _decode(c: Any, i: Any, p: Any) -> dict[str, Any] | None:
    if c is not None:
        h, idx = (c.decode() if isinstance(c, bytes) else c).split(":")
        return {"status": "Committed", "height": int(h), "index": int(idx)}
    if i is not None:
        code, _, message = (i.decode() if isinstance(i, bytes) else i).partition("\n")
        return {"status": "Invalid", "reason": code, "message": message}
    if p is not None:
        return {"status": "Pending"}
    return None


class MemoryStatusStore:
    def __init__(self, capacity: int = 1_000_000) -> None:
        self.capacity = capacity
        self._data: OrderedDict[str, str] = OrderedDict()

    def _set(self, key: str, value: str, only_new: bool = False) -> None:
        if only_new and key in self._data:
            return
        self._data[key] = value
        self._data.move_to_end(key)
        while len(self._data) > self.capacity:
            self._data.popitem(last=False)

    async def set_pending(self, hashes: list[str]) -> None:
        for h in hashes:
            self._set("p" + h, "1", only_new=True)

    async def set_committed(self, items: list[tuple[str, int, int]]) -> None:
        for h, height, index in items:
            self._set("c" + h, f"{height}:{index}")

    async def set_invalid(self, items: list[tuple[str, str]]) -> None:
        for h, reason in items:
            self._set("i" + h, reason)

    async def get(self, h: str) -> dict[str, Any] | None:
        return _decode(self._data.get("c" + h), self._data.get("i" + h), self._data.get("p" + h))

    async def ping(self) -> bool:
        return True

    async def close(self) -> None:
        return None


class RedisStatusStore:
    def __init__(self, url: str, ledger: str, ttl_s: int = DEFAULT_TTL_S) -> None:
        self.r = redis_from_url(url, socket_timeout=5, socket_connect_timeout=5, health_check_interval=30)
        self.prefix = f"cv:{ledger}:"
        self.ttl = ttl_s
        self._set_many = self.r.register_script(SET_MANY_LUA)

    async def _pipeline(self, kind: str, items: list[tuple[str, str]], nx: bool = False) -> None:
        if not items:
            return
        prefix = f"{self.prefix}{kind}:"
        flags = [str(self.ttl), "1" if nx else "0"]
        for i in range(0, len(items), SCRIPT_CHUNK):
            chunk = items[i : i + SCRIPT_CHUNK]
            await self._set_many(keys=[prefix + h for h, _ in chunk], args=flags + [v for _, v in chunk])

    async def set_pending(self, hashes: list[str]) -> None:
        await self._pipeline("p", [(h, "1") for h in hashes], nx=True)

    async def set_committed(self, items: list[tuple[str, int, int]]) -> None:
        await self._pipeline("c", [(h, f"{height}:{index}") for h, height, index in items])

    async def set_invalid(self, items: list[tuple[str, str]]) -> None:
        await self._pipeline("i", items)

    async def get(self, h: str) -> dict[str, Any] | None:
        c, i, p = await self.r.mget(f"{self.prefix}c:{h}", f"{self.prefix}i:{h}", f"{self.prefix}p:{h}")
        return _decode(c, i, p)

    async def ping(self) -> bool:
        try:
            return bool(await self.r.ping())
        except Exception:
            return False

    async def close(self) -> None:
        await self.r.aclose()
