"""A log followed as `tail -f` does, for the browser: the last part first, then what is appended,
read in bounded chunks (never the whole file) through the same opener as `torcctl logs` (a
regular file of the user's, never a FIFO, a device or a symlink a job planted)."""

from __future__ import annotations

import asyncio
import codecs
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass

from torcd.services.job_logs import open_log_for_reading

TAIL_BYTES = 64 * 1024  # shown at first
CHUNK_BYTES = 256 * 1024  # read at most this much per poll
POLL_SECONDS = 0.5


@dataclass
class Piece:
    text: str
    offset: int  # bytes of the file read so far
    note: str = ""  # "truncated", "missing", "unreadable: …"


class Follower:
    """Reads one log from where it last stopped; the file may appear later, grow, or be truncated."""

    def __init__(self, path: str, tail_bytes: int = TAIL_BYTES) -> None:
        self.path = path
        self.offset: int | None = None  # None: not yet opened
        self.tail_bytes = tail_bytes
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.behind = False  # more was there than one chunk
        self.said_missing = False

    def read(self) -> Piece | None:
        """What is new since the last read, or None (blocking file I/O: run it in a thread)."""
        try:
            f = open_log_for_reading(self.path)
        except FileNotFoundError:
            if self.offset is not None or self.said_missing:
                return None
            self.said_missing = True
            return Piece("", 0, "missing")
        except (OSError, ValueError) as e:
            return Piece("", self.offset or 0, f"unreadable: {getattr(e, 'strerror', None) or e}")
        with f:
            size = os.fstat(f.fileno()).st_size
            note = ""
            if self.offset is None:
                self.offset = max(0, size - self.tail_bytes)
            elif size < self.offset:  # rewritten from the start (a new attempt truncates)
                self.offset, note = 0, "truncated"
                self.decoder.reset()
            if size == self.offset and not note:
                return None
            f.seek(self.offset)
            data = f.read(min(CHUNK_BYTES, size - self.offset))
            self.offset += len(data)
            self.behind = size > self.offset
            return Piece(self.decoder.decode(data), self.offset, note)


async def follow(path: str, poll: float = POLL_SECONDS) -> AsyncIterator[Piece]:
    """Pieces as they come, forever (the caller stops reading when the browser leaves)."""
    follower = Follower(path)
    while True:
        piece = await asyncio.to_thread(follower.read)
        if piece is not None:
            yield piece
            if piece.note.startswith("unreadable"):
                return
        if not follower.behind:
            await asyncio.sleep(poll)
