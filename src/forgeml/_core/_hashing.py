"""SHA-256 of files and of streams as they are written."""

from __future__ import annotations

import hashlib
import os
from types import TracebackType
from typing import IO, TYPE_CHECKING

if TYPE_CHECKING:
    from concurrent.futures import ThreadPoolExecutor

    from typing_extensions import Buffer

#: Bytes read at a time by :func:`sha256_file`.
CHUNK_SIZE = 1 << 20


def sha256_file(path: str | os.PathLike[str]) -> str:
    """The SHA-256 hex digest of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    buffer = bytearray(CHUNK_SIZE)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(view):
            digest.update(view[:n])
    return digest.hexdigest()


class HashingWriter:
    """A write-only, unseekable binary stream that writes to ``raw`` and hashes what passes.

    Large writes are hashed on a helper thread while ``raw`` writes them (both
    release the GIL), so hashing costs little on top of the write itself. Each
    ``write`` returns only after its bytes are hashed and written, so callers
    may reuse their buffers.
    """

    def __init__(self, raw: IO[bytes], *, parallel_min: int = CHUNK_SIZE) -> None:
        self._raw = raw
        self._digest = hashlib.sha256()
        self._parallel_min = parallel_min
        self._pool: ThreadPoolExecutor | None = None
        self._position = 0

    def write(self, data: Buffer) -> int:
        view = memoryview(data)
        if view.ndim != 1 or view.itemsize != 1:
            view = view.cast("B")
        size = view.nbytes
        if size >= self._parallel_min:
            if self._pool is None:
                from concurrent.futures import ThreadPoolExecutor

                self._pool = ThreadPoolExecutor(1, thread_name_prefix="forgeml-sha256")
            hashed = self._pool.submit(self._digest.update, view)
            try:
                self._raw.write(view)
            finally:
                hashed.result()
        else:
            self._digest.update(view)
            self._raw.write(view)
        self._position += size
        return size

    def tell(self) -> int:
        """Bytes written so far."""
        return self._position

    def flush(self) -> None:
        self._raw.flush()

    def writable(self) -> bool:
        return True

    def readable(self) -> bool:
        return False

    def seekable(self) -> bool:
        return False

    def hexdigest(self) -> str:
        """The SHA-256 hex digest of everything written so far."""
        return self._digest.hexdigest()

    def close(self) -> None:
        """Stop the hashing thread; ``raw`` stays open (its owner closes it)."""
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    def __enter__(self) -> HashingWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
