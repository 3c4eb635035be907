"""dlt's postgres client with three changes, all about landing values exactly.

1. A column may carry its exact PostgreSQL type in the column hint `x-postgres-type` (`numeric`,
   `interval`, `int4[]`, `varchar(40)`, ...); the table is created with that type. dlt's own data
   types cannot say unconstrained numeric, uuid, interval or arrays, and a pg -> pg copy must keep them.
2. CSV load files are COPYed with psql's convention and nothing else: an unquoted empty field is
   NULL, a quoted `""` is an empty string. dlt's own CSV job adds FORCE_NULL on every nullable column,
   which turns empty strings into NULL. Rows streamed from another PostgreSQL (`cai_common.streams`)
   come in the format their COPY TO wrote.
3. A COPY that PostgreSQL rejects for its data fails at once. dlt's CSV job runs `copy_expert` on the
   raw psycopg2 connection, so a `DataError` reached dlt's job runner untranslated and was retried as
   if transient (5 times, then the package was left pending). Bad data never gets better by retrying.
4. A CSV file whose typing pass still runs (`cai_common.checks`) commits only once its verdict is in:
   a bad file fails without a row landing, and a column this load created with a type the verdict
   does not confirm gets the verdict's type and the file is COPYed again, in the same transaction.
5. A `replace` load empties its table in the COPY's own transaction. dlt truncates every replaced
   table in a transaction of its own before any job runs, so a file PostgreSQL then refused left the
   table empty: its old rows were gone and nothing replaced them.
6. A job lands its rows once. dlt marks a job done by moving its file after the job's transaction
   committed; a process that died between the two left a job dlt runs again in the next run, which
   COPYed an appended file's rows a second time (and failed for good on the pipeline state's unique
   row id). Each COPY and INSERT job now records itself in `_cai_landed_jobs` in its own transaction,
   and a job that finds itself there lands nothing (`_landed`).
"""

from __future__ import annotations

import codecs
import contextlib
import copy
import threading
from typing import Any

import psycopg2
from dlt.common.destination.capabilities import DestinationCapabilitiesContext
from dlt.common.destination.configuration import CsvFormatConfiguration
from dlt.common.destination.exceptions import DestinationInvalidFileFormat, DestinationTerminalException
from dlt.common.storages.file_storage import FileStorage
from dlt.destinations.impl.postgres.factory import PostgresTypeMapper
from dlt.destinations.impl.postgres.factory import postgres as dlt_postgres
from dlt.destinations.impl.postgres.postgres import PostgresClient, PostgresCsvCopyJob
from dlt.destinations.insert_job_client import InsertValuesLoadJob

from cai_common import CaiError, checks, progress, streams
from cai_common.pg_types import accepts, comparable

PG_TYPE_HINT = "x-postgres-type"
"""Column hint holding the column's exact PostgreSQL type, used as is in CREATE/ALTER TABLE."""

# COPY reads the file in pieces of this size: large enough for disk speed, small enough to stay flat.
COPY_READ_SIZE = 1024 * 1024


# Rows PostgreSQL reported for each CSV COPY, by load id and table; COPY jobs run on dlt's loader threads.
_COPIED: dict[str, dict[str, int]] = {}
_COPIED_LOCK = threading.Lock()


def copied_rows(load_ids: list[str]) -> dict[str, int]:
    """Rows PostgreSQL reported writing (`COPY n`) per table in these loads; forgets them once read."""
    totals: dict[str, int] = {}
    with _COPIED_LOCK:
        for load_id in load_ids:
            for table, rows in _COPIED.pop(load_id, {}).items():
                totals[table] = totals.get(table, 0) + rows
            for key in [k for k in _REPLACED if k[0] == load_id]:
                del _REPLACED[key]
    return totals


class _Replacing:
    """One replaced table in one load: its COPY jobs take turns, and the first to commit emptied it."""

    def __init__(self) -> None:
        self.turn = threading.Lock()
        self.emptied = False


_REPLACED: dict[tuple[str, str], _Replacing] = {}


def _replacing(load_id: str, table: str) -> _Replacing:
    with _COPIED_LOCK:
        return _REPLACED.setdefault((load_id, table), _Replacing())


class ExactTypeMapper(PostgresTypeMapper):
    """dlt's postgres type mapper; a column's `x-postgres-type` hint wins over its dlt data type."""

    def to_destination_type(self, column: Any, table: Any) -> str:
        exact = column.get(PG_TYPE_HINT)
        if exact:
            return str(exact)
        return str(super().to_destination_type(column, table))


class ExactCsvCopyJob(PostgresCsvCopyJob):
    """COPY a CSV load file (header line = column names) as psql does: empty = NULL, `""` = empty string."""

    def run(self) -> None:
        config = self._job_client.config
        sql_client = self._job_client.sql_client
        csv_format = config.csv_format or CsvFormatConfiguration()
        table_name = self.load_table_name
        known = {c["name"] for c in self._job_client.schema.get_table_columns(table_name).values()}
        with FileStorage.open_zipsafe_ro(self._file_path, "rb") as f:
            first = f.readline()
            if first.startswith(codecs.BOM_UTF8):
                first = first[len(codecs.BOM_UTF8):]
            headers = [h.strip().strip('"') for h in first.decode(csv_format.encoding).rstrip("\r\n").split(
                csv_format.delimiter)]
            if unknown := [h for h in headers if h not in known]:
                raise DestinationInvalidFileFormat("postgres", "csv", self._file_path,
                                                   f"columns {unknown} are not in table `{table_name}`")
            columns = ",".join(sql_client.escape_column_name(h, quote=True) for h in headers)
            delimiter = csv_format.delimiter.replace("'", "''")
            opener = streams.opener_for(self._file_path)  # rows streamed from their source, not in the file
            if opener is not None and streams.copy_format_for(self._file_path) == "text":
                options = "FORMAT text, ENCODING 'UTF8'"  # PostgreSQL's own: NULL is \N, escapes as COPY TO wrote them
            else:
                options = f"FORMAT CSV, DELIMITER '{delimiter}', NULL '', ENCODING '{csv_format.encoding}'"
            table = sql_client.make_qualified_table_name(table_name)
            copy_sql = f"COPY {table} ({columns}) FROM STDIN WITH ({options})"
            check = checks.check_for(self._file_path) if opener is None else None
            start = f.tell()
            # A replaced table is emptied by the first of its COPYs to commit, in that COPY's transaction:
            # the table's COPYs take turns, and one that fails leaves the old rows (and the emptying) to the next.
            replacing = _replacing(self._load_id, table_name) if _replaces(self._load_table) else None
            widen: dict[str, str] = {}
            while True:
                source: Any = contextlib.nullcontext(f) if opener is None else opener()
                f.seek(start)
                try:
                    with contextlib.ExitStack() as turn:
                        if replacing is not None:
                            turn.enter_context(replacing.turn)
                        with source as rows, sql_client.begin_transaction(), \
                                sql_client.native_connection.cursor() as cursor:
                            # Values without an offset loaded into timestamptz mean UTC, whatever the server's zone.
                            cursor.execute("SET LOCAL TIME ZONE 'UTC'")
                            done, emptied = _landed(sql_client, self._load_id, self.job_id(), table_name)
                            if done:  # committed by a process that died before dlt marked the job done
                                copied = 0
                            else:
                                if replacing is not None and not (replacing.emptied or emptied):
                                    cursor.execute(f"TRUNCATE TABLE {table}")
                                if check is None:
                                    cursor.copy_expert(copy_sql, progress.Counted(rows), size=COPY_READ_SIZE)
                                else:
                                    _widen(cursor, table, table_name, widen)
                                    _checked_copy(cursor, copy_sql, rows, check, table, table_name)
                                copied = cursor.rowcount  # PostgreSQL's own count: `COPY n`
                                _land(sql_client, self._load_id, self.job_id(), table_name)
                        if replacing is not None:
                            replacing.emptied = True
                except _Widen as again:  # rolled back: the new columns get the verdict's types, and again
                    widen.update(again.types)
                    continue
                except (psycopg2.DataError, psycopg2.IntegrityError, psycopg2.ProgrammingError) as exc:
                    raise DestinationTerminalException(f"{type(exc).__name__}: {exc}") from exc
                except CaiError as exc:  # the stream's source failed (its query, its login): the COPY rolled back
                    raise DestinationTerminalException(getattr(exc, "problem", str(exc))) from exc
                except psycopg2.Error as exc:
                    cause = exc.__context__  # a stream that failed while COPY read it cancels the COPY
                    if opener is not None and isinstance(cause, CaiError):
                        raise DestinationTerminalException(str(cause)) from cause
                    raise
                break
            if check is not None:
                check.altered.update(widen)
        with _COPIED_LOCK:
            tables = _COPIED.setdefault(self._load_id, {})
            tables[table_name] = tables.get(table_name, 0) + max(copied, 0)


def _replaces(table: Any) -> bool:
    """Whether a load table is replaced by truncating it and loading it again (dlt's default strategy)."""
    return bool(table["write_disposition"] == "replace"
                and table.get("x-replace-strategy", "truncate-and-insert") == "truncate-and-insert")


class _Widen(Exception):  # noqa: N818 - a signal to COPY again, not an error
    """The verdict gives columns this load created other types: roll back, alter them, COPY again."""

    def __init__(self, types: dict[str, str]) -> None:
        super().__init__(", ".join(types))
        self.types = types


class _Ruled(Exception):  # noqa: N818 - stops a COPY whose verdict is in, not an error of its own
    """The file's verdict came in while COPY read it, and the COPY cannot stand: stop reading."""


def _column_types(cursor: Any, table: str) -> dict[str, str]:
    cursor.execute("SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
                   "WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped", (table,))
    return {name: comparable(pg_type) for name, pg_type in cursor.fetchall()}


def _judge(check: checks.Check, verdict: checks.Verdict, has: dict[str, str], table_name: str) -> dict[str, str]:
    """The new columns to give other types (empty: the COPY stands as it is).

    Raises:
        DestinationTerminalException: a column the table had before this load would change the file's values.
    """
    widen = {}
    for name, pg_type in verdict.types.items():
        if name not in has:
            continue  # COPY refuses a column the table lacks
        if name in check.new_columns:
            if has[name] != comparable(pg_type):
                widen[name] = pg_type
        elif not accepts(has[name], comparable(pg_type)):
            raise DestinationTerminalException(checks.type_conflict(name, table_name, pg_type, has[name]))
    return widen


def _verdict(check: checks.Check) -> checks.Verdict:
    """The file's verdict, waited for; a file the pass found bad fails with the pass's own words."""
    try:
        return check.verdict.result()
    except CaiError as exc:
        raise DestinationTerminalException(getattr(exc, "problem", str(exc))) from exc


def _checked_copy(cursor: Any, copy_sql: str, rows: Any, check: checks.Check, table: str, table_name: str) -> None:
    """COPY a file while its typing pass runs; return once the verdict confirms the table's types.

    The COPY stops early when the verdict comes in while it runs and rules it out. A file the pass
    found bad fails with the pass's words, even where PostgreSQL refused it first.

    Raises:
        _Widen: columns this load created need the verdict's types (the caller rolls back).
        DestinationTerminalException: the file is bad, or a column the table had would change its values.
    """
    has = _column_types(cursor, table)

    def stands() -> bool:
        if check.verdict.exception() is not None:
            return False
        try:
            return not _judge(check, check.verdict.result(), has, table_name)
        except DestinationTerminalException:
            return False

    reader = _Watched(rows, check, stands)
    try:
        cursor.copy_expert(copy_sql, progress.Counted(reader), size=COPY_READ_SIZE)
    except psycopg2.Error:
        widen = _judge(check, _verdict(check), has, table_name)  # the pass's word on a bad file comes first
        if widen:
            raise _Widen(widen) from None
        raise  # PostgreSQL refused a value the verdict let through
    widen = _judge(check, _verdict(check), has, table_name)
    if widen:
        raise _Widen(widen)


class _Watched:
    """A file's rows as COPY reads them, stopped as soon as its verdict is in and rules the COPY out."""

    def __init__(self, rows: Any, check: checks.Check, stands: Any) -> None:
        self.rows, self.check, self.stands = rows, check, stands
        self.judged = False

    def read(self, size: int = -1) -> bytes:
        if not self.judged and self.check.verdict.done():
            self.judged = True
            if not self.stands():
                raise _Ruled()
        data: bytes = self.rows.read(size)
        return data


def _widen(cursor: Any, table: str, table_name: str, types: dict[str, str]) -> None:
    """Give columns this load created the verdict's types; each must hold no value yet (another
    file of this load may have filled it: then the file's values cannot go in unchanged)."""
    for name, pg_type in types.items():
        column = psycopg2.extensions.quote_ident(name, cursor)
        cursor.execute(f"SELECT EXISTS (SELECT FROM {table} WHERE {column} IS NOT NULL)")
        if cursor.fetchone()[0]:
            has = _column_types(cursor, table)[name]
            raise DestinationTerminalException(checks.type_conflict(name, table_name, pg_type, has))
        cursor.execute(f"ALTER TABLE {table} ALTER COLUMN {column} TYPE {pg_type} USING NULL")


DDL_LOCK = 1667328372
"""First key of the advisory lock that serializes DDL on one dataset (the second: hashtext of its name)."""

LANDED_TABLE = "_cai_landed_jobs"
"""Load jobs of unfinished loads whose rows committed, one row each, written in the job's own transaction
(rows of a load go when dlt records the load complete)."""


def _landed_table(sql_client: Any) -> str:
    return str(sql_client.make_qualified_table_name(LANDED_TABLE))


def _create_landed_table(sql_client: Any) -> None:
    """Create `_cai_landed_jobs` in the dataset; call it under the dataset's DDL lock."""
    sql_client.execute_sql(f"CREATE TABLE IF NOT EXISTS {_landed_table(sql_client)} (load_id text NOT NULL, "
                           "job_id text NOT NULL, table_name text NOT NULL, landed_at timestamptz NOT NULL "
                           "DEFAULT now(), PRIMARY KEY (load_id, job_id))")


def _has_landed_table(sql_client: Any) -> bool:
    return sql_client.execute_sql("SELECT to_regclass(%s)", _landed_table(sql_client))[0][0] is not None


def _landed(sql_client: Any, load_id: str, job_id: str, table_name: str) -> tuple[bool, bool]:
    """In a job's transaction: whether this job's rows committed already, and whether any job of this
    load committed rows to its table (which then has been emptied, if the load replaces it)."""
    landed = _landed_table(sql_client)
    if not _has_landed_table(sql_client):
        # a package left by a version without the table (each load creates it in `initialize_storage`)
        sql_client.execute_sql("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", DDL_LOCK, sql_client.dataset_name)
        _create_landed_table(sql_client)
        return False, False
    done, any_job = sql_client.execute_sql(
        f"SELECT coalesce(bool_or(job_id = %s), false), count(*) > 0 FROM {landed} "
        "WHERE load_id = %s AND table_name = %s", job_id, load_id, table_name)[0]
    return bool(done), bool(any_job)


def _land(sql_client: Any, load_id: str, job_id: str, table_name: str) -> None:
    """In a job's transaction, after its rows: the job has landed (commits or rolls back with them)."""
    sql_client.execute_sql(f"INSERT INTO {_landed_table(sql_client)} (load_id, job_id, table_name) "
                           "VALUES (%s, %s, %s)", load_id, job_id, table_name)


class OnceInsertValuesJob(InsertValuesLoadJob):
    """dlt's INSERT job (the pipeline state's row), run once: a job whose rows committed in a process
    that died before dlt marked it done lands nothing again (its row id is unique: the insert failed)."""

    def run(self) -> None:
        self._sql_client = sql_client = self._job_client.sql_client
        table_name = self.load_table_name
        with sql_client.begin_transaction():
            if _landed(sql_client, self._load_id, self.job_id(), table_name)[0]:
                return
            for fragments in self._insert(sql_client.make_qualified_table_name(table_name), self._file_path):
                sql_client.execute_fragments(fragments)
            _land(sql_client, self._load_id, self.job_id(), table_name)


class CaiPostgresClient(PostgresClient):
    """dlt's postgres job client, COPYing CSV load files with ExactCsvCopyJob, its DDL serialized per schema.

    dlt looks at what exists, then creates what is missing (the schema, its `_dlt_*` tables, new
    tables and columns). Two first runs of different connectors into one schema at the same moment
    both saw nothing and both created: one failed on PostgreSQL's catalog (`pg_type_typname_nsp_index`
    in a burst of 40 runs; a deadlock in the test). An advisory lock on the schema's name, taken in
    the transaction of each of those steps, makes the second run see what the first created.
    """

    def _lock_ddl(self) -> None:
        """Wait for the schema's DDL lock; it is released when the current transaction ends.

        A transaction lock, not a session one: dlt resets its connection after a failed statement
        (a missing `_dlt_version` on the first run is one), which would drop a session lock.
        """
        self.sql_client.execute_sql("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", DDL_LOCK,
                                    self.sql_client.dataset_name)

    def initialize_storage(self, truncate_tables: Any = None) -> None:
        with self.sql_client.begin_transaction():
            self._lock_ddl()
            super().initialize_storage(truncate_tables)
            _create_landed_table(self.sql_client)

    def complete_load(self, load_id: str) -> None:
        """Record the load (dlt), then forget its landed jobs, in the dataset and in its staging dataset
        (a merge COPYs there): none of them runs again once every job's file is marked done, which is
        when dlt calls this."""
        super().complete_load(load_id)
        for dataset in (contextlib.nullcontext(), self.sql_client.with_staging_dataset()):
            with dataset:
                if _has_landed_table(self.sql_client):
                    self.sql_client.execute_sql(f"DELETE FROM {_landed_table(self.sql_client)} WHERE load_id = %s",
                                                load_id)

    def _execute_schema_update_sql(self, only_tables: Any, store_schema: bool = True) -> Any:
        # dlt runs this in its DDL transaction and reads the existing tables first: after the lock,
        # a run that waited sees what the other one created.
        self._lock_ddl()
        return super()._execute_schema_update_sql(only_tables, store_schema)

    def should_truncate_table_before_load(self, table_name: str) -> bool:
        """Never before the load: each replaced table is emptied by its COPY (`ExactCsvCopyJob`)."""
        return False

    def create_load_job(self, table: Any, file_path: str, load_id: str, restore: bool = False) -> Any:
        job = super().create_load_job(table, file_path, load_id, restore)
        if type(job) is PostgresCsvCopyJob:
            job = ExactCsvCopyJob(file_path)
        elif _replaces(table) and not isinstance(job, ExactCsvCopyJob):
            # nothing else empties a replaced table: it would be appended to instead
            raise DestinationTerminalException(
                f"table `{table['name']}` is replaced, and only CSV load files can replace it (got {file_path})")
        elif type(job) is InsertValuesLoadJob:
            job = OnceInsertValuesJob(file_path)
        return job


class postgres(dlt_postgres):  # noqa: N801 - dlt names destination factories in lower case
    """dlt's postgres destination factory with CaiPostgresClient and exact column types."""

    def _raw_capabilities(self) -> DestinationCapabilitiesContext:
        caps = super()._raw_capabilities()
        caps.type_mapper = ExactTypeMapper
        return caps

    def capabilities(self, config: Any = None, naming: Any = None) -> DestinationCapabilitiesContext:
        """dlt's capabilities, computed once per naming convention when no final config is given.

        Without one, dlt resolves a partial configuration from every config provider on each call
        (8 ms), and one load asks about 20 times (0.15-0.2 s of a run). Each caller gets its own
        copy: dlt's pipeline sets fields on the one it gets.
        """
        if config is not None:
            return super().capabilities(config, naming)
        cache: dict[int, tuple[Any, DestinationCapabilitiesContext]] = self.__dict__.setdefault("_cai_caps", {})
        if id(naming) not in cache:  # the naming is kept in the entry, so its id is never reused
            cache[id(naming)] = (naming, super().capabilities(None, naming))
        return copy.copy(cache[id(naming)][1])

    @property
    def client_class(self) -> type[PostgresClient]:
        return CaiPostgresClient


def existing_column_types(dsn: str, schema: str) -> dict[str, dict[str, str]]:
    """Table -> column -> type (as format_type prints it) of the tables already in ``schema``.

    Asked through psycopg2, the driver dlt loads with, already loaded here: `cai load-csv` needs no other.
    """
    query = """
        SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod)
        FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = %s AND c.relkind IN ('r', 'p') AND a.attnum > 0 AND NOT a.attisdropped"""
    tables: dict[str, dict[str, str]] = {}
    conn = psycopg2.connect(dsn, connect_timeout=30)
    try:
        with conn.cursor() as cursor:
            cursor.execute(query, (schema,))
            for table, column, pg_type in cursor:
                tables.setdefault(table, {})[column] = pg_type
    finally:
        conn.close()
    return tables
