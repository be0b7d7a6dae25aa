"""Batch linking with a per-report cache (sqlite, keyed by report text and graph) and processes."""
from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import sqlite3
from pathlib import Path
from typing import Sequence

from knowledge.linking import Linker, Mention

_WORKER: Linker | None = None


def cache_key(text: str, fingerprint: str) -> str:
    return hashlib.sha256(f"{fingerprint}\0{text}".encode("utf-8", "surrogatepass")).hexdigest()


class LinkCacheError(ValueError):
    """The cache file is not a link cache (message names the file)."""


def _mentions(stored: str) -> list[Mention] | None:
    """Mentions from a cache row, or None when the row is not what this code writes."""
    try:
        return [Mention(**m) for m in json.loads(stored)]
    except (TypeError, ValueError):
        return None


class LinkCache:
    """Mentions per report in ``<dir>/links.sqlite``; the key includes the graph fingerprint.
    Rows are JSON, so reading a cache never runs code; a row that is not mentions is a cache miss."""

    def __init__(self, cache_dir: str | Path):
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
        self.path = Path(cache_dir) / "links.sqlite"
        try:
            self.db = sqlite3.connect(self.path)
            self.db.execute("CREATE TABLE IF NOT EXISTS links (key TEXT PRIMARY KEY, mentions TEXT)")
        except sqlite3.DatabaseError as e:
            raise LinkCacheError(f"{self.path}: not a kgvlp link cache (sqlite: {e})") from None

    def get_many(self, keys: Sequence[str]) -> dict[str, list[Mention]]:
        found = {}
        for i in range(0, len(keys), 500):
            chunk = list(keys[i:i + 500])
            rows = self.db.execute(f"SELECT key, mentions FROM links WHERE key IN ({','.join('?' * len(chunk))})",
                                   chunk)
            found.update({k: m for k, m in ((k, _mentions(v)) for k, v in rows) if m is not None})
        return found

    def put_many(self, items: dict[str, list[Mention]]) -> None:
        self.db.executemany("INSERT OR REPLACE INTO links VALUES (?, ?)",
                            [(k, json.dumps([m.to_dict() for m in v])) for k, v in items.items()])
        self.db.commit()


def _link_in_worker(texts: list[str]) -> list[list[Mention]]:
    return _WORKER.link_batch(texts)


def link_many(linker: Linker, texts: Sequence[str], processes: int = 1, cache_dir: str | Path | None = None,
              progress: bool = True, chunksize: int = 256) -> list[list[Mention]]:
    """Mentions for each text, in order. Cached reports are not re-linked; the rest are
    linked ``chunksize`` at a time (``Linker.link_batch``), in ``processes`` forked workers
    that share the parent's linker when ``processes > 1``."""
    global _WORKER
    from kgvlp.progress import counter

    texts = list(texts)
    keys = [cache_key(t, linker.fingerprint) for t in texts]
    cache = LinkCache(cache_dir) if cache_dir is not None else None
    done = cache.get_many(keys) if cache else {}
    first: dict[str, str] = {}
    for key, text in zip(keys, texts):
        if key not in done:
            first.setdefault(key, text)
    todo, todo_texts = list(first), list(first.values())
    batches = [todo_texts[i:i + chunksize] for i in range(0, len(todo_texts), chunksize)]
    bar = counter(len(todo), "linking", enabled=progress and bool(todo))
    linked: list[list[Mention]] = []
    if processes > 1 and len(batches) > 1:
        _WORKER = linker
        with mp.get_context("fork").Pool(processes) as pool:
            for result in pool.imap(_link_in_worker, batches):
                linked.extend(result)
                bar.update(len(result))
        _WORKER = None
    else:
        for batch in batches:
            linked.extend(linker.link_batch(batch))
            bar.update(len(batch))
    bar.close()
    fresh = dict(zip(todo, linked))
    if cache and fresh:
        cache.put_many(fresh)
    done.update(fresh)
    return [done[k] for k in keys]
