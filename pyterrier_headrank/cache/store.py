"""The sqlite store of :class:`~pyterrier_headrank.cache.HeadRankCache`: one entry per candidate list, checksummed; WAL
mode and a busy timeout so that several processes share one file."""
from __future__ import annotations

import contextlib
import hashlib
import pathlib
import sqlite3
import time
from typing import Dict, Iterator, Sequence

from .keys import BUSY_TIMEOUT_S, CACHE_FORMAT, QUERY_CHUNK, HeadRankCacheError

# ---- the sqlite store ---------------------------------------------------------------------------------------------
SCHEMA = (
    "CREATE TABLE IF NOT EXISTS headrank_cache_meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS headrank_cache_entries (key TEXT PRIMARY KEY, scorer TEXT NOT NULL, "
    "docnos TEXT NOT NULL, scores BLOB NOT NULL, checksum TEXT NOT NULL, created REAL NOT NULL)",
)


def entry_checksum(key: str, docnos_json: str, scores: bytes) -> str:
    """SHA-256 over an entry's key, docnos and score bytes: a changed byte anywhere makes the entry fail it."""
    digest = hashlib.sha256(key.encode("ascii"))
    digest.update(b"\0" + docnos_json.encode("utf-8", "surrogatepass") + b"\0")
    digest.update(scores)
    return digest.hexdigest()


class ScoreStore:
    """The sqlite file behind a :class:`HeadRankCache`: one short-lived connection per operation.

    WAL mode lets readers and one writer work at once; the busy timeout makes a second writer wait its turn instead
    of failing. Every sqlite error becomes a :class:`HeadRankCacheError` that names the file.
    """

    def __init__(self, path, busy_timeout_s: float = BUSY_TIMEOUT_S):
        self.path = pathlib.Path(path)
        self.busy_timeout_s = float(busy_timeout_s)
        if str(path) == ":memory:" or self.path.is_dir():
            raise ValueError(f"HeadRankCache: the cache path must be a file, got '{path}'")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.connect() as db:
            self._init_schema(db)

    def _use_wal(self, db: sqlite3.Connection) -> None:
        """Switch to WAL, retrying while another process holds the file: sqlite answers "locked" at once, without its
        busy handler, when two connections change the journal mode of a new file at the same moment."""
        deadline = time.monotonic() + self.busy_timeout_s
        while True:
            try:
                db.execute("PRAGMA journal_mode = WAL")
                return
            except sqlite3.OperationalError as err:
                text = str(err).lower()
                if ("locked" not in text and "busy" not in text) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    @contextlib.contextmanager
    def connect(self) -> Iterator[sqlite3.Connection]:
        """A connection in autocommit mode (transactions are explicit), closed afterwards; errors name the file."""
        db = None
        try:
            db = sqlite3.connect(str(self.path), timeout=self.busy_timeout_s, isolation_level=None)
            db.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_s * 1000)}")
            self._use_wal(db)
            db.execute("PRAGMA synchronous = NORMAL")
            yield db
        except sqlite3.DatabaseError as err:
            raise self._error(err) from err
        finally:
            if db is not None:
                db.close()

    def _error(self, err: sqlite3.DatabaseError) -> HeadRankCacheError:
        text = str(err)
        if "locked" in text or "busy" in text:
            return HeadRankCacheError(f"HeadRankCache: cache file '{self.path}' stayed locked by another process for "
                                      f"more than {self.busy_timeout_s:g}s ({text})")
        return HeadRankCacheError(f"HeadRankCache: cache file '{self.path}' is corrupt or not an sqlite database "
                                  f"({text}). Delete it (and '{self.path.name}-wal', '{self.path.name}-shm' beside it) "
                                  f"to start a new cache.")

    def _init_schema(self, db: sqlite3.Connection) -> None:
        """Create the tables in an empty file; refuse other sqlite databases and other cache formats."""
        db.execute("BEGIN IMMEDIATE")
        try:
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if tables and "headrank_cache_meta" not in tables:
                raise HeadRankCacheError(f"HeadRankCache: '{self.path}' is an sqlite database of something else "
                                         f"(tables {sorted(tables)[:5]}), not a HeadRankCache; use another path")
            for statement in SCHEMA:
                db.execute(statement)
            db.execute("INSERT OR IGNORE INTO headrank_cache_meta VALUES ('format', ?)", (str(CACHE_FORMAT),))
            (found,) = db.execute("SELECT value FROM headrank_cache_meta WHERE name = 'format'").fetchone()
            if found != str(CACHE_FORMAT):
                raise HeadRankCacheError(f"HeadRankCache: '{self.path}' is a cache of format {found}; this version "
                                         f"writes format {CACHE_FORMAT}. Delete the file to start a new cache.")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def read(self, keys: Sequence[str]) -> Dict[str, tuple]:
        """``key -> (docnos_json, scores_bytes, checksum)`` for the stored keys among ``keys``."""
        found = {}
        with self.connect() as db:
            for start in range(0, len(keys), QUERY_CHUNK):
                chunk = list(keys[start:start + QUERY_CHUNK])
                rows = db.execute(f"SELECT key, docnos, scores, checksum FROM headrank_cache_entries WHERE key IN "
                                  f"({','.join('?' * len(chunk))})", chunk)
                found.update({key: (docnos, bytes(scores), checksum) for key, docnos, scores, checksum in rows})
        return found

    def write(self, rows: Sequence[tuple]) -> None:
        """Store ``(key, scorer, docnos_json, scores_bytes)`` rows (replacing same keys) in one transaction."""
        now = time.time()
        records = [(key, scorer, docnos, blob, entry_checksum(key, docnos, blob), now)
                   for key, scorer, docnos, blob in rows]
        with self.connect() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                db.executemany("INSERT OR REPLACE INTO headrank_cache_entries VALUES (?, ?, ?, ?, ?, ?)", records)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    def count(self) -> int:
        with self.connect() as db:
            return int(db.execute("SELECT COUNT(*) FROM headrank_cache_entries").fetchone()[0])


