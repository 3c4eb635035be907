"""CSV -> PostgreSQL: a source file becomes a dlt load file that COPY reads as is.

The file is streamed (never held in memory) into the pipeline's working folder with its header line
rewritten to the column names dlt will use; one pyarrow pass then validates its structure, counts its
records and infers each column's type from every value (`inference`). dlt imports the file into the
load package (`dlt.mark.with_file_import`) and its postgres destination runs `COPY ... FROM STDIN`,
so PostgreSQL parses the values: no Python code converts them.

With ``later`` the pass runs beside the load instead of before it: the file's first rows give the
types the table is created with, and the pass over every value delivers its verdict to the COPY
through `cai_common.checks`, which commits only once the verdict confirms them (or widens the
columns this load created and COPYs again). PostgreSQL's COPY then no longer waits for the pass.

A dialect COPY cannot read (a quote character other than `"`, NULL markers other than the empty
field) is transcoded instead: pyarrow reads it as text and writes psql's CSV (every string quoted, so
an empty string stays `""` and NULL stays an empty field), and the same COPY loads that.
"""

from __future__ import annotations

import codecs
import csv
import os
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import TypeVar

import pyarrow as pa
import pyarrow.csv as pa_csv
from dlt.common.normalizers.naming.snake_case import NamingConvention as SnakeCaseNaming
from dlt.common.storages.fsspec_filesystem import FileItemDict

from cai_common.checks import Verdict
from cai_common.errors import disk_full_named
from cai_common.naming import column_names
from dlt_sources.filesystem.configuration import CsvOptions
from dlt_sources.filesystem.inference import ColumnTypes
from dlt_sources.filesystem.readers import ENCODINGS, CsvFileError, open_source

# Bytes per read while streaming a file into the load package: large enough for full disk speed,
# small enough that memory stays flat whatever the file size.
COPY_CHUNK = 8 * 1024 * 1024
# pyarrow block size for the validation pass. pyarrow's allocations peak near 70 blocks whatever
# the block size (the streaming reader keeps blocks alive). Measured on psql's 306 MB export of 2M rows,
# the pass took 0.7-0.8 s with 256 KB, 512 KB or 1 MB blocks and added +24, +42 and +76 MB to the
# process's peak RSS (1.1-1.2 s and +200 MB or more with 8 MB blocks). With blocks matched eight at a
# time, 128 KB blocks took as long as 256 KB and `cai load-csv` peaked at 140 MB instead of 152.
VALIDATE_BLOCK = 128 * 1024
# A record longer than a block (a 10 MB clinical note) needs a larger one: each retry multiplies it,
# up to PostgreSQL's own limit for a field (1 GB).
LARGER_BLOCKS = (1024 * 1024, 16 * 1024 * 1024, 128 * 1024 * 1024, 1100 * 1024 * 1024)
MATCH_BLOCKS = 8
"""Blocks whose values are matched together by the typing pass."""
GUESS_BLOCK = 128 * 1024
"""The first rows whose types a table is created with when the pass runs beside the load: about 850
rows of a clinical export, 0.02 s. A 1 MB block took 0.08 s and raised `cai load-csv`'s peak RSS by
23 MB (all 14 patterns run on every column of it as text)."""
# One pass at a time, in file order: each COPY waits only for its own file's verdict.
_PASSES = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cai-csv-pass")
MAX_COLUMNS = 1600
"""PostgreSQL's limit on a table's columns."""


def _with_block_sizes(read: Callable[[int], _T]) -> _T:
    """Run ``read(block_size)`` with 1 MB blocks, again with larger ones while a record straddles blocks."""
    for block in (VALIDATE_BLOCK, *LARGER_BLOCKS):
        try:
            return read(block)
        except pa.ArrowInvalid as exc:
            if "straddl" not in str(exc) or block == LARGER_BLOCKS[-1]:
                raise
    raise AssertionError("unreachable")

_NAMING = SnakeCaseNaming()

_T = TypeVar("_T")

Progress = Callable[[int], None]
"""Called with the number of source bytes just copied."""


@dataclass(frozen=True)
class StagedCsv:
    """A source file ready for import: a local CSV with dlt's column names, its rows and column types."""

    path: Path
    rows: int
    types: dict[str, str]
    """Column -> PostgreSQL type (inferred from every value, or pinned by the user); with a pending
    ``verdict``, from the first rows only (a column without a value there is text)."""
    verdict: Future[Verdict] | None = None
    """The pass over every value, still running beside the load (None: ``types`` and ``rows`` are final)."""
    unseen: frozenset[str] = frozenset()
    """Columns without a value in the first rows: their type in ``types`` is no guess at all."""


def supports_fast_path(options: CsvOptions) -> bool:
    """Whether COPY can read files with these options exactly as they are.

    COPY's CSV mode takes `"` quotes and reads only empty fields as NULL; other quote characters or
    NULL markers are transcoded to that dialect first.
    """
    return options.quote_char == '"' and set(options.null_values) <= {""}


def pinned_types(columns: dict[str, str] | None) -> dict[str, str]:
    """A source's `columns` hint keyed by dlt's column names (`MRN` and `mrn` pin the same column)."""
    return {_NAMING.normalize_identifier(name): pg_type for name, pg_type in (columns or {}).items()}


def stage_csv(
    file: FileItemDict, options: CsvOptions, folder: Path, progress: Progress | None = None,
    pinned: dict[str, str] | None = None, later: bool = False,
) -> StagedCsv:
    """Stream one source CSV into ``folder`` as a load file, validate it and type its columns.

    Args:
        file: a file listed by dlt's filesystem resource.
        options: the source's CSV dialect.
        folder: where the load file goes (the pipeline's working folder).
        progress: called with source bytes read.
        pinned: column (dlt name) -> PostgreSQL type chosen by the user; not inferred.
        later: type from the first rows and leave the pass over every value running (``verdict``),
            where COPY reads the file as it is; a transcoded file is typed while it is rewritten.

    Raises:
        CsvFileError: empty file, undecodable header, or a record with the wrong number of fields
            (the message names the line).
    """
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{uuid.uuid4().hex}.csv"
    encoding = ENCODINGS[options.encoding]
    with open_source(file) as source:
        raw_first = source.readline()
        first = raw_first.removeprefix(codecs.BOM_UTF8)
        if not first.strip():
            raise CsvFileError(file["file_url"], "is empty (no header row)")
        try:
            fields = next(csv.reader([first.decode(encoding)], delimiter=options.delimiter,
                                     quotechar=options.quote_char))
        except UnicodeDecodeError as exc:
            raise CsvFileError(file["file_url"], f"line 1 is not valid {options.encoding}: {exc.reason}") from exc
        names = column_names(fields if options.header else None, len(fields))
        if len(names) > MAX_COLUMNS:
            raise CsvFileError(file["file_url"], f"has {len(names)} columns; a PostgreSQL table holds at most "
                                                 f"{MAX_COLUMNS}: split the file, or load only some of its columns")
        if not supports_fast_path(options):
            if progress:
                progress(len(raw_first))
            return _transcode(file, options, target, names, pinned or {}, progress)
        header = (options.delimiter.join(names) + "\n").encode(encoding)
        if options.header and raw_first == header and _link_local(file, target):
            if progress:  # the whole file at once: a link reads nothing
                progress(max(len(raw_first), int(file["size_in_bytes"] or 0)))
        else:
            if progress:
                progress(len(raw_first))
            with disk_full_named(target), open(target, "wb") as out:
                out.write(header)
                if not options.header:
                    out.write(first)
                while chunk := source.read(COPY_CHUNK):
                    out.write(chunk)
                    if progress:
                        progress(len(chunk))
    if later:
        guess = _guess(target, options, names, pinned or {})
        if guess is not None:
            verdict = _PASSES.submit(_verdict, target, file["file_url"], options, names, pinned or {})
            return StagedCsv(path=target, rows=0, types=guess.result(), verdict=verdict,
                             unseen=frozenset(guess.unseen()))
    try:
        rows, types = _scan(target, file["file_url"], options, names, pinned or {})
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    return StagedCsv(path=target, rows=rows, types=types)


def _link_local(file: FileItemDict, target: Path) -> bool:
    """Hard-link a local, uncompressed source whose header needs no rewrite, instead of copying it.

    Only the staging name is removed after the load, never the source. False (copy instead) when the
    file is remote, compressed, or on another filesystem.
    """
    if file.fsspec.protocol not in ("file", ("file", "local")) or file["file_name"].endswith(".gz"):
        return False
    source_path = file["file_url"].removeprefix("file://")
    try:
        os.link(source_path, target)
    except OSError:
        return False
    return True


def _as_text(names: list[str], null_values: list[str]) -> pa_csv.ConvertOptions:
    """Every column as a string; NULL only for an unquoted NULL marker, so `""` stays an empty string."""
    return pa_csv.ConvertOptions(column_types={n: pa.string() for n in names}, null_values=null_values,
                                 strings_can_be_null=True, quoted_strings_can_be_null=False)


def _scan(
    path: Path, file_url: str, options: CsvOptions, names: list[str], pinned: dict[str, str]
) -> tuple[int, dict[str, str]]:
    """Count records, check each has as many fields as the header, and infer types from every value.

    The first block is read with every column as text; the whole file is then read converting only
    the columns that can still widen (a column that is text stays text), plus one to count records.
    """
    try:
        return _with_block_sizes(lambda block: _scan_blocks(path, file_url, options, names, pinned, block))
    except pa.ArrowInvalid as exc:  # a record past PostgreSQL's 1 GB field limit
        raise CsvFileError(file_url, _problem(exc, options)) from exc


def pass_again(path: Path, file_url: str, options: CsvOptions, pinned: dict[str, str] | None) -> Future[Verdict]:
    """Start the typing pass over a staged file again: its load was left pending by a process that died,
    and its first pass with it. The staged file's header holds dlt's column names."""
    with open(path, "rb") as staged:
        first = staged.readline().removeprefix(codecs.BOM_UTF8)
    names = next(csv.reader([first.decode(ENCODINGS[options.encoding])], delimiter=options.delimiter,
                            quotechar=options.quote_char))
    return _PASSES.submit(_verdict, path, file_url, options, names, pinned or {})


def _guess(path: Path, options: CsvOptions, names: list[str], pinned: dict[str, str]) -> ColumnTypes | None:
    """Types of the first rows (`GUESS_BLOCK`); None where those rows are bad already (the whole pass,
    run before the load, then says how) or a record straddles the block."""
    read_options = pa_csv.ReadOptions(block_size=GUESS_BLOCK, encoding=ENCODINGS[options.encoding],
                                      use_threads=False)
    parse_options = pa_csv.ParseOptions(delimiter=options.delimiter, quote_char=options.quote_char,
                                        newlines_in_values=True)
    types = ColumnTypes(names, pinned)
    try:
        with pa_csv.open_csv(path, read_options=read_options, parse_options=parse_options,
                             convert_options=_as_text(names, [""])) as reader:
            for batch in reader:
                types.update(batch)
                break
    except (pa.ArrowInvalid, UnicodeDecodeError):
        return None
    return types


def _verdict(path: Path, file_url: str, options: CsvOptions, names: list[str], pinned: dict[str, str]) -> Verdict:
    rows, types = _scan(path, file_url, options, names, pinned)
    return Verdict(rows=rows, types=types)


def _scan_blocks(
    path: Path, file_url: str, options: CsvOptions, names: list[str], pinned: dict[str, str], block: int
) -> tuple[int, dict[str, str]]:
    read_options = pa_csv.ReadOptions(block_size=block, encoding=ENCODINGS[options.encoding], use_threads=False)
    bad_rows: list[str] = []

    def on_invalid(row: pa_csv.InvalidRow) -> str:
        bad_rows.append(row.text)
        return "error"

    parse_options = pa_csv.ParseOptions(delimiter=options.delimiter, quote_char=options.quote_char,
                                        newlines_in_values=True, invalid_row_handler=on_invalid)
    types = ColumnTypes(names, pinned)

    def batches(columns: list[str]) -> pa_csv.CSVStreamingReader:
        convert = _as_text(columns, [""])
        convert.include_columns = columns
        return pa_csv.open_csv(path, read_options=read_options, parse_options=parse_options,
                               convert_options=convert)

    rows = 0
    try:
        first = batches(types.undecided() or names[:1])
        for batch in first:
            types.update(batch)
            break
        first.close()
        # Matching values (pyarrow compute, GIL released) overlaps parsing the next blocks. Blocks are
        # matched MATCH_BLOCKS at a time (one chunked column per call, so pyarrow's per-call cost is
        # paid once per group, not per block); one group in flight keeps memory flat.
        with ThreadPoolExecutor(max_workers=1) as matcher:
            matching: Future[None] | None = None
            group: list[pa.RecordBatch] = []
            for batch in chain(batches(types.undecided() or names[:1]), [None]):
                if batch is not None:
                    rows += batch.num_rows
                    group.append(batch)
                    if len(group) < MATCH_BLOCKS:
                        continue
                if matching is not None:
                    matching.result()
                matching = matcher.submit(types.update, pa.Table.from_batches(group)) if group else None
                group = []
            if matching is not None:
                matching.result()
    except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
        if "straddl" in str(exc):
            raise
        if bad_rows:
            line = _line_of(path, bad_rows[0])
            where = f"line {line}" if line else "a record"
            raise CsvFileError(file_url, f"{where} has the wrong number of fields: "
                                         f"{str(exc).split(': ', 2)[-1][:200]}") from exc
        raise CsvFileError(file_url, _problem(exc, options)) from exc
    return rows, types.result()


def _problem(exc: BaseException, options: CsvOptions) -> str:
    """pyarrow's complaint in a reader's words."""
    text = str(exc).replace("\n", " ")[:300]
    if "invalid UTF8" in text or isinstance(exc, UnicodeDecodeError):
        return f"is not valid {options.encoding} (set the source's `encoding`): {text}"
    return text


def _transcode(
    file: FileItemDict, options: CsvOptions, target: Path, names: list[str], pinned: dict[str, str],
    progress: Progress | None,
) -> StagedCsv:
    """Rewrite a dialect COPY cannot read as psql's CSV (UTF-8, `,`, `"`), typing columns on the way."""
    try:
        with disk_full_named(target):
            return _with_block_sizes(lambda block: _transcode_blocks(file, options, target, names, pinned, progress,
                                                                     block))
    except pa.ArrowInvalid as exc:  # a record past PostgreSQL's 1 GB field limit
        raise CsvFileError(file["file_url"], _problem(exc, options)) from exc


def _transcode_blocks(
    file: FileItemDict, options: CsvOptions, target: Path, names: list[str], pinned: dict[str, str],
    progress: Progress | None, block: int,
) -> StagedCsv:
    read_options = pa_csv.ReadOptions(block_size=block, encoding=ENCODINGS[options.encoding],
                                      column_names=names, skip_rows=1 if options.header else 0, use_threads=False)
    parse_options = pa_csv.ParseOptions(delimiter=options.delimiter, quote_char=options.quote_char,
                                        newlines_in_values=True)
    types = ColumnTypes(names, pinned)
    rows = 0
    try:
        with open_source(file) as source, pa_csv.CSVWriter(str(target), pa.schema([(n, pa.string()) for n in names]),
                                                           write_options=pa_csv.WriteOptions(quoting_style="needed")) \
                as writer:
            for batch in pa_csv.open_csv(source, read_options=read_options, parse_options=parse_options,
                                         convert_options=_as_text(names, options.null_values)):
                rows += batch.num_rows
                types.update(batch)
                writer.write_batch(batch)
                if progress:
                    progress(batch.nbytes)
    except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
        target.unlink(missing_ok=True)
        if "straddl" in str(exc):
            raise
        raise CsvFileError(file["file_url"], _problem(exc, options)) from exc
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    return StagedCsv(path=target, rows=rows, types=types.result())


def _line_of(path: Path, text: str) -> int | None:
    """1-based line (the header is line 1) where the record starting with ``text`` begins."""
    needle = b"\n" + text.split("\n", 1)[0].encode("utf-8", errors="ignore")[:200]
    with open(path, "rb") as f:
        line = 1  # line number at the start of `data`
        data = f.read(0)
        while chunk := f.read(COPY_CHUNK):
            data += chunk
            at = data.find(needle)
            if at >= 0:
                return line + data.count(b"\n", 0, at) + 1
            keep = max(0, len(data) - len(needle))
            line += data.count(b"\n", 0, keep)
            data = data[keep:]
    return None


__all__ = ["StagedCsv", "column_names", "pass_again", "pinned_types", "stage_csv", "supports_fast_path"]
