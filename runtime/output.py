"""Bounded capture of command output: keeps the head and the tail, counts what was cut."""
from __future__ import annotations


class HeadTailBuffer:
    """Collects bytes up to ``limit``: the first half is kept as head, the last half as a rolling tail.

    Memory stays O(limit) however much is fed, so a command that prints gigabytes cannot grow the host
    process. ``render()`` joins head and tail with one marker line saying how many bytes were cut.
    """

    def __init__(self, limit: int) -> None:
        if limit < 2:
            raise ValueError("output limit must be at least 2 bytes")
        self.head_limit = limit // 2
        self.tail_limit = limit - self.head_limit
        self._head = bytearray()
        self._tail = bytearray()
        self.total = 0

    def feed(self, data: bytes) -> None:
        self.total += len(data)
        room = self.head_limit - len(self._head)
        if room > 0:
            self._head += data[:room]
            data = data[room:]
        if not data:
            return
        if len(data) >= self.tail_limit:
            self._tail = bytearray(data[-self.tail_limit :])
        else:
            self._tail += data
            excess = len(self._tail) - self.tail_limit
            if excess > 0:
                del self._tail[:excess]

    @property
    def truncated_bytes(self) -> int:
        return self.total - len(self._head) - len(self._tail)

    def render(self) -> str:
        """Decoded output (invalid UTF-8 replaced), with a cut marker when bytes were dropped."""
        head = self._head.decode("utf-8", errors="replace")
        tail = self._tail.decode("utf-8", errors="replace")
        cut = self.truncated_bytes
        if not cut:
            return head + tail
        sep = "" if head.endswith("\n") or not head else "\n"
        return f"{head}{sep}[... {cut} bytes of output cut; {self.total} bytes in all ...]\n{tail}"
