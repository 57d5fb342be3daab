"""Data contracts: check a table against ``data_contracts/<name>.json`` and quarantine bad rows.

A contract is a Great Expectations suite in its plain JSON form, ``{"name", "expectations":
[{"type", "kwargs", "meta"}]}``, so it stays readable and GX can run it too. The evaluation here
compiles every expectation to a SQL predicate that DuckDB runs where the data is (an Arrow table
or a Parquet/CSV/JSON scan): 10M rows take a fraction of a second and never become Python
objects; a uniqueness check finds the duplicated values once, by hash, before the other
queries run. ``validate_with_gx`` runs the same suite through GX itself on a sample, as a second
opinion; the tests prove both verdicts agree.

Row-level expectations decide per row: a failing row goes to quarantine with a ``_reason``
naming every expectation it broke. Table-level ones (a column exists, the row count) land in
``table_failures``; a missing column also fails every row, so nothing is silently dropped and
``read == accepted + quarantined`` always holds.

Later tables plug in their own checks: ``register_sql_expectation`` for a new vectorised
expectation type, ``Contract.with_row_check`` for a Python predicate per row (JSON schema,
anything SQL cannot say).
"""

from __future__ import annotations

import itertools
import json
from collections import Counter
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import duckdb
import numpy as np
import pyarrow as pa

from workhorse.errors import ConfigError, ContractError

REASON_COLUMN = "_reason"
REASON_SEPARATOR = "; "
ROW_COLUMN = "_wh_row"
TIMEZONE_SUFFIX = r"(Z|[+-][0-9]{2}(:?[0-9]{2})?)$"

# GX names types after the backend (numpy for pandas, SQL for databases); we accept both and
# evaluate in DuckDB's terms.
TYPE_ALIASES = {
    "int": "BIGINT",
    "int32": "BIGINT",
    "int64": "BIGINT",
    "integer": "BIGINT",
    "bigint": "BIGINT",
    "long": "BIGINT",
    "float": "DOUBLE",
    "float32": "DOUBLE",
    "float64": "DOUBLE",
    "double": "DOUBLE",
    "real": "DOUBLE",
    "number": "DOUBLE",
    "str": "VARCHAR",
    "string": "VARCHAR",
    "object": "VARCHAR",
    "varchar": "VARCHAR",
    "text": "VARCHAR",
    "bool": "BOOLEAN",
    "boolean": "BOOLEAN",
    "timestamp": "TIMESTAMP",
    "datetime64[ns]": "TIMESTAMP",
    "timestamptz": "TIMESTAMP WITH TIME ZONE",
    "timestamp with time zone": "TIMESTAMP WITH TIME ZONE",
    "datetime64[ns, utc]": "TIMESTAMP WITH TIME ZONE",
    "date": "DATE",
    "json": "VARCHAR",
}
INTEGER_TYPES = {
    "TINYINT",
    "SMALLINT",
    "INTEGER",
    "BIGINT",
    "HUGEINT",
    "UTINYINT",
    "USMALLINT",
    "UINTEGER",
    "UBIGINT",
}
NUMERIC_TYPES = INTEGER_TYPES | {"FLOAT", "DOUBLE", "REAL"} | {"DECIMAL"}
TABLE_LEVEL = {
    "expect_column_to_exist",
    "expect_table_row_count_to_be_between",
    "expect_table_row_count_to_equal",
}
SHORT_KWARGS = {
    "min_value": "min",
    "max_value": "max",
    "value_set": "set",
    "type_": "type",
    "type_list": "types",
}


# --------------------------------------------------------------------------- the contract


@dataclass(frozen=True)
class Expectation:
    """One GX expectation as written in the suite JSON."""

    type: str
    kwargs: dict[str, Any]
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def column(self) -> str | None:
        return self.kwargs.get("column")

    @property
    def label(self) -> str:
        """How a failure is named in ``_reason``: ``expect_..._between(prompt_tokens, min=0)``."""
        parts = [self.column] if self.column else []
        for key, value in self.kwargs.items():
            if key == "column" or value is None or key in ("result_format", "catch_exceptions"):
                continue
            if isinstance(value, (list, tuple)):
                value = "|".join(map(str, value))
            elif isinstance(value, dict):
                value = "{...}"  # a JSON schema is too long for a reason column
            parts.append(f"{SHORT_KWARGS.get(key, key)}={value}")
        return f"{self.type}({', '.join(parts)})"


@dataclass(frozen=True)
class RowCheck:
    """A table-specific check in Python, called once per row with the named columns' values.

    For what SQL cannot say (a JSON schema per use case, a parser). It runs inside DuckDB as a
    vectorised UDF over Arrow batches, so it costs Python time per row but no row objects.
    """

    name: str
    columns: tuple[str, ...]
    predicate: Callable[..., bool]

    @property
    def label(self) -> str:
        return f"{self.name}({', '.join(self.columns)})"


@dataclass(frozen=True)
class Contract:
    """A data contract: a named GX suite plus optional Python row checks."""

    name: str
    expectations: tuple[Expectation, ...]
    row_checks: tuple[RowCheck, ...] = ()
    meta: dict[str, Any] = field(default_factory=dict)

    def with_row_check(
        self, name: str, columns: Iterable[str] | str, predicate: Callable[..., bool]
    ) -> "Contract":
        """A copy with one more Python check; ``predicate(*values) -> bool`` per row."""
        cols = (columns,) if isinstance(columns, str) else tuple(columns)
        return replace(self, row_checks=self.row_checks + (RowCheck(name, cols, predicate),))

    def without(self, *types: str) -> "Contract":
        """A copy without the expectations of these types (a policy choice, e.g. skip a costly check)."""
        return replace(self, expectations=tuple(e for e in self.expectations if e.type not in types))

    @property
    def declared_types(self) -> dict[str, str]:
        """column -> DuckDB type from ``expect_column_values_to_be_of_type``; accepted rows get these."""
        return {
            e.column: duckdb_type(e.kwargs["type_"])
            for e in self.expectations
            if e.type == "expect_column_values_to_be_of_type"
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "meta": self.meta,
            "expectations": [{"type": e.type, "kwargs": e.kwargs, "meta": e.meta} for e in self.expectations],
        }


def duckdb_type(name: str) -> str:
    """Normalise a GX/numpy/SQL type name to the DuckDB type used to evaluate it."""
    return TYPE_ALIASES.get(name.strip().lower(), name.strip().upper())


def contract_from_dict(data: dict[str, Any], source: str = "<dict>") -> Contract:
    """Build a Contract from suite JSON; unknown expectation types fail here, not mid-run."""
    try:
        expectations = tuple(
            Expectation(e["type"], dict(e.get("kwargs", {})), dict(e.get("meta", {})))
            for e in data["expectations"]
        )
        contract = Contract(data["name"], expectations, meta=dict(data.get("meta", {})))
    except (KeyError, TypeError) as error:
        raise ConfigError(
            f"contract {source} is not a GX suite {{name, expectations:[{{type, kwargs}}]}}: {error!r}"
        )
    unknown = sorted(
        {e.type for e in expectations} - set(SQL_EXPECTATIONS) - set(PYTHON_EXPECTATIONS) - TABLE_LEVEL
    )
    if unknown:
        raise ConfigError(
            f"contract {contract.name!r} uses expectation types workhorse cannot evaluate: {unknown}"
        )
    return contract


def load_contract(name: str) -> Contract:
    """Read ``data_contracts/<name>.json`` (package data) or a path to a suite JSON."""
    path = Path(name)
    if path.suffix == ".json" and path.exists():
        return contract_from_dict(json.loads(path.read_text()), str(path))
    resource = resources.files("workhorse.data_contracts").joinpath(f"{name}.json")
    if not resource.is_file():
        raise ConfigError(f"no data contract named {name!r} in data_contracts/")
    return contract_from_dict(json.loads(resource.read_text()), f"{name}.json")


# --------------------------------------------------------------------------- SQL compilation


def q(identifier: str) -> str:
    """Quote a column name for DuckDB."""
    return '"' + identifier.replace('"', '""') + '"'


def lit(value: Any) -> str:
    """A Python value as a SQL literal."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, (int, float)):
        return repr(value)
    return "'" + str(value).replace("'", "''") + "'"


@dataclass(frozen=True)
class Column:
    """What a SQL builder knows about the column it checks."""

    name: str
    type: str  # the DuckDB type in the source
    expression: str | None = None  # set for an absent optional column: NULL
    source: str | None = None  # the relation the column comes from, for checks that look at all rows

    @property
    def sql(self) -> str:
        return self.expression or q(self.name)

    @property
    def numeric(self) -> str:
        """The value as a number; strings that are not numbers become NULL (and then fail)."""
        base = self.type.split("(")[0]
        return self.sql if base in NUMERIC_TYPES else f"TRY_CAST({self.sql} AS DOUBLE)"

    @property
    def text(self) -> str:
        return self.sql if self.type == "VARCHAR" else f"CAST({self.sql} AS VARCHAR)"


SqlBuilder = Callable[[Expectation, Column], str]
SQL_EXPECTATIONS: dict[str, SqlBuilder] = {}
PYTHON_EXPECTATIONS: dict[str, Callable[[Expectation], Callable[[Any], bool]]] = {}


def register_sql_expectation(type_name: str) -> Callable[[SqlBuilder], SqlBuilder]:
    """Decorator: teach the evaluator a new column expectation as a SQL predicate (TRUE = passes)."""

    def decorate(builder: SqlBuilder) -> SqlBuilder:
        SQL_EXPECTATIONS[type_name] = builder
        return builder

    return decorate


def register_python_expectation(type_name: str):
    """Decorator: a column expectation judged in Python per value (nulls pass, as in GX)."""

    def decorate(factory):
        PYTHON_EXPECTATIONS[type_name] = factory
        return factory

    return decorate


def _nullable(column: Column, condition: str) -> str:
    # GX ignores nulls in every column expectation except the not-null ones; so do we.
    return f"({column.sql} IS NULL OR coalesce({condition}, FALSE))"


@register_sql_expectation("expect_column_values_to_not_be_null")
def _not_null(e: Expectation, c: Column) -> str:
    return f"({c.sql} IS NOT NULL)"


@register_sql_expectation("expect_column_values_to_be_null")
def _null(e: Expectation, c: Column) -> str:
    return f"({c.sql} IS NULL)"


def _bounds(e: Expectation, value: str) -> str:
    lo, hi = e.kwargs.get("min_value"), e.kwargs.get("max_value")
    terms = []
    if lo is not None:
        terms.append(f"{value} {'>' if e.kwargs.get('strict_min') else '>='} {lit(lo)}")
    if hi is not None:
        terms.append(f"{value} {'<' if e.kwargs.get('strict_max') else '<='} {lit(hi)}")
    return " AND ".join(terms) or f"{value} IS NOT NULL"


@register_sql_expectation("expect_column_values_to_be_between")
def _between(e: Expectation, c: Column) -> str:
    return _nullable(c, _bounds(e, c.numeric))


@register_sql_expectation("expect_column_value_lengths_to_be_between")
def _lengths_between(e: Expectation, c: Column) -> str:
    return _nullable(c, _bounds(e, f"length({c.text})"))


def _in_set(e: Expectation, c: Column) -> str:
    values = list(e.kwargs["value_set"])
    if all(isinstance(v, str) for v in values):
        return f"{c.text} IN ({', '.join(map(lit, values))})"
    return f"{c.numeric} IN ({', '.join(map(lit, values))})"


@register_sql_expectation("expect_column_values_to_be_in_set")
def _be_in_set(e: Expectation, c: Column) -> str:
    return _nullable(c, _in_set(e, c))


@register_sql_expectation("expect_column_values_to_not_be_in_set")
def _not_in_set(e: Expectation, c: Column) -> str:
    return _nullable(c, f"NOT ({_in_set(e, c)})")


@register_sql_expectation("expect_column_values_to_be_unique")
def _unique(e: Expectation, c: Column) -> str:
    # GX semantics: every row sharing a value fails, not only the later copies; which copy is
    # real is a human decision, and the quarantine file shows them side by side.
    # This window is the fallback without a source; ``_unique_in_source`` is what usually runs.
    return _nullable(c, f"count(*) OVER (PARTITION BY {c.sql}) = 1")


@register_sql_expectation("expect_column_values_to_be_timezone_aware")
def _timezone_aware(e: Expectation, c: Column) -> str:
    """A workhorse expectation (GX has none): a time with a zone. Typed columns decide by type,
    text by its suffix (Z or an offset), so a 10M-row typed column costs nothing."""
    if c.type == "TIMESTAMP WITH TIME ZONE":
        return "TRUE"
    if c.type.startswith("TIMESTAMP") or c.type == "DATE":
        return f"({c.sql} IS NULL)"
    return _nullable(c, f"regexp_matches({c.text}, {lit(TIMEZONE_SUFFIX)})")


@register_sql_expectation("expect_column_values_to_match_regex")
def _match_regex(e: Expectation, c: Column) -> str:
    return _nullable(c, f"regexp_matches({c.text}, {lit(e.kwargs['regex'])})")


@register_sql_expectation("expect_column_values_to_not_match_regex")
def _not_match_regex(e: Expectation, c: Column) -> str:
    return _nullable(c, f"NOT regexp_matches({c.text}, {lit(e.kwargs['regex'])})")


@register_sql_expectation("expect_column_values_to_be_json_parseable")
def _json_parseable(e: Expectation, c: Column) -> str:
    return _nullable(c, f"json_valid({c.text})")


def castable(c: Column, target: str) -> str:
    """SQL: the value is (or converts losslessly to) ``target``; per row, so one bad cell fails one row."""
    target, source = duckdb_type(target), c.type.split("(")[0]
    if source == target or (target == "DOUBLE" and source in NUMERIC_TYPES) or (target == "VARCHAR"):
        return "TRUE"
    if target in INTEGER_TYPES:
        # TRY_CAST('12.5' AS BIGINT) rounds to 13; a token count of 12.5 is wrong, not 13.
        as_double = c.numeric
        return f"({as_double} IS NOT NULL AND {as_double} = trunc({as_double}))"
    return f"TRY_CAST({c.sql} AS {target}) IS NOT NULL"


@register_sql_expectation("expect_column_values_to_be_of_type")
def _of_type(e: Expectation, c: Column) -> str:
    return _nullable(c, castable(c, e.kwargs["type_"]))


@register_sql_expectation("expect_column_values_to_be_in_type_list")
def _in_type_list(e: Expectation, c: Column) -> str:
    return _nullable(c, " OR ".join(castable(c, t) for t in e.kwargs["type_list"]))


@register_python_expectation("expect_column_values_to_match_json_schema")
def _json_schema(e: Expectation) -> Callable[[Any], bool]:
    import jsonschema  # comes with great_expectations; only needed by contracts that use it

    validator = jsonschema.Draft7Validator(e.kwargs["json_schema"])

    def check(value: Any) -> bool:
        try:
            document = json.loads(value) if isinstance(value, (str, bytes)) else value
        except ValueError:
            return False
        return validator.is_valid(document)

    return check


# --------------------------------------------------------------------------- evaluation


@dataclass(frozen=True)
class Check:
    """A compiled expectation: its label and a boolean SQL expression (TRUE = the row passes)."""

    label: str
    sql: str


def source_columns(con: duckdb.DuckDBPyConnection, source: str) -> dict[str, str]:
    """column -> DuckDB type of a relation (a table/view name or a parenthesised query)."""
    return {row[0]: row[1] for row in con.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()}


_udf_names = itertools.count()


def _python_check(
    con, index: int, columns: list[Column], predicate: Callable[..., bool], nulls_pass: bool
) -> str:
    """Register ``predicate`` as a vectorised DuckDB UDF and return the SQL that calls it."""

    # DuckDB wants a fixed arity; one STRUCT argument carries any number of columns.
    def udf(packed: pa.StructArray | pa.ChunkedArray) -> pa.Array:
        if isinstance(packed, pa.ChunkedArray):
            packed = packed.combine_chunks()
        rows = zip(*(packed.field(i).to_pylist() for i in range(len(columns))))
        return pa.array([_safe(predicate, values, nulls_pass) for values in rows], pa.bool_())

    # Unique per compilation: a connection may compile a contract twice (the audit compiles it
    # without, then with, its uniqueness check), and DuckDB refuses a second function of a name.
    name = f"_wh_check_{index}_{next(_udf_names)}"
    struct_type = "STRUCT(" + ", ".join(f"f{i} {c.type}" for i, c in enumerate(columns)) + ")"
    con.create_function(
        name, udf, [struct_type], "BOOLEAN", type="arrow", null_handling="special", side_effects=False
    )
    packed = ", ".join(f"f{i} := {c.sql}" for i, c in enumerate(columns))
    return f"coalesce({name}(struct_pack({packed})), FALSE)"  # NULL: the UDF could not judge


def _safe(predicate: Callable[..., bool], values: tuple, nulls_pass: bool) -> bool:
    if nulls_pass and all(v is None for v in values):
        return True
    try:
        return bool(predicate(*values))
    except Exception:  # a predicate that crashes on a row has judged that row bad
        return False


def compile_checks(
    con: duckdb.DuckDBPyConnection,
    columns: dict[str, str],
    contract: Contract,
    source: str | None = None,
    duplicates: Mapping[str, pa.Table] | None = None,
) -> list[Check]:
    """Row-level checks for a source with these columns.

    A column the contract requires (``expect_column_to_exist``) but the source lacks fails every
    row once, under that expectation. A column it does not require is optional: when absent, its
    expectations see NULLs, so ``not_null`` fails and the others pass, as they would in GX.
    """
    required = {e.column for e in contract.expectations if e.type == "expect_column_to_exist"}
    checks: list[Check] = []
    for index, e in enumerate(contract.expectations):
        if e.type == "expect_column_to_exist":
            if e.column not in columns:
                checks.append(Check(e.label, "FALSE"))
        elif e.type in TABLE_LEVEL or (e.column in required and e.column not in columns):
            continue
        else:
            checks.append(
                Check(e.label, _compile_one(con, index, e, _column(e.column, columns, source), duplicates))
            )
    for offset, rc in enumerate(contract.row_checks, start=len(contract.expectations)):
        cols = [_column(c, columns) for c in rc.columns]
        checks.append(Check(rc.label, _python_check(con, offset, cols, rc.predicate, nulls_pass=False)))
    return checks


def _column(name: str | None, columns: dict[str, str], source: str | None = None) -> Column:
    if name in columns:
        return Column(name, columns[name], source=source)
    return Column(name or "", "VARCHAR", expression="CAST(NULL AS VARCHAR)")


def _compile_one(
    con: duckdb.DuckDBPyConnection,
    index: int,
    e: Expectation,
    column: Column,
    duplicates: Mapping[str, pa.Table] | None,
) -> str:
    if e.type == UNIQUE and column.source is not None and not column.expression:
        known = duplicates.get(column.name) if duplicates is not None else None
        return _unique_in_source(con, column, known)
    if e.type in SQL_EXPECTATIONS:
        return SQL_EXPECTATIONS[e.type](e, column)
    return _python_check(con, index, [column], PYTHON_EXPECTATIONS[e.type](e), nulls_pass=True)


# --------------------------------------------------------------------------- duplicates

UNIQUE = "expect_column_values_to_be_unique"
_duplicate_tables = itertools.count()


def _unique_in_source(con: duckdb.DuckDBPyConnection, c: Column, duplicates: pa.Table | None = None) -> str:
    """The uniqueness check against the column's duplicated values, found once at compile time
    (or before it, by ``find_duplicates``).

    Every later query on the relation (aggregate, failure counts, quarantine, canonical copy)
    then probes a small table instead of re-grouping 10M strings, and a log without duplicates
    (the usual case) pays one narrow scan and no per-row check at all.
    """
    duplicates = duplicated_values(con, c) if duplicates is None else duplicates
    if not duplicates.num_rows:
        return "TRUE"
    name = f"_wh_duplicates_{next(_duplicate_tables)}"
    con.register(name, duplicates)
    return _nullable(c, f"{c.sql} NOT IN (SELECT value FROM {name})")


def find_duplicates(
    con: duckdb.DuckDBPyConnection, source: str, contract: Contract, columns: dict[str, str]
) -> dict[str, pa.Table]:
    """The duplicated values of each column ``contract`` wants unique, as ``check_relation`` finds
    them: for a caller that runs this scan beside other work, on a connection of its own.
    ``columns`` is ``source_columns(source)``, which the caller has already."""
    return {
        e.column: duplicated_values(con, Column(e.column, columns[e.column], source=source))
        for e in contract.expectations
        if e.type == UNIQUE and e.column in columns
    }


def duplicated_values(con: duckdb.DuckDBPyConnection, c: Column) -> pa.Table:
    """The non-null values of ``c`` that occur more than once in its source, as a ``value`` column.

    Rows are compared by their 64-bit hash (one scan, and no 10M-string hash table); only values
    whose hashes collide are then compared exactly, so a hash collision never quarantines a row.
    """
    from workhorse.tasks.audit.repeats import repeated_hashes  # numba: only for logs with a unique column

    # Straight into one numpy array, ours to overwrite: an Arrow table of 10M hashes first is
    # ~0.2 s more in a fresh process, and so is a second array for the partitions (new memory).
    hashes = con.sql(f"SELECT hash({c.sql}) AS h FROM {c.source} WHERE {c.sql} IS NOT NULL").fetchnumpy()["h"]
    colliding = repeated_hashes(np.require(hashes, np.uint64, ["C", "W"]))
    if not len(colliding):
        return pa.table({"value": pa.array([], pa.string())})
    con.register("_wh_colliding", pa.table({"h": colliding}))
    try:
        return con.sql(
            f"SELECT {c.sql} AS value FROM {c.source} WHERE hash({c.sql}) IN (SELECT h FROM "
            f"_wh_colliding) AND {c.sql} IS NOT NULL GROUP BY 1 HAVING count(*) > 1"
        ).to_arrow_table()
    finally:
        con.unregister("_wh_colliding")


def table_failures(contract: Contract, columns: dict[str, str], read: int) -> list[str]:
    """Table-level expectations that failed: missing columns and row counts."""
    failures = []
    for e in contract.expectations:
        if e.type == "expect_column_to_exist" and e.column not in columns:
            failures.append(f"{e.label}: the column is missing (found: {', '.join(columns) or 'none'})")
        elif e.type == "expect_table_row_count_to_be_between" and not _count_ok(e, read):
            failures.append(f"{e.label}: {read} rows")
        elif e.type == "expect_table_row_count_to_equal" and read != e.kwargs["value"]:
            failures.append(f"{e.label}: {read} rows")
    return failures


def _count_ok(e: Expectation, read: int) -> bool:
    lo, hi = e.kwargs.get("min_value"), e.kwargs.get("max_value")
    return (lo is None or read >= lo) and (hi is None or read <= hi)


@dataclass
class CheckedRelation:
    """A source relation with the contract compiled onto it, evaluated lazily by DuckDB.

    ``flagged_sql`` has the source columns plus a flag per check and ``_ok``; ``accepted_sql``
    the passing rows cast to the contract's declared types; ``quarantined_sql`` the failing rows
    as they came, plus ``_reason``. Large inputs (the audit's 10M rows) stay inside DuckDB from
    scan to aggregate.
    """

    con: duckdb.DuckDBPyConnection
    source: str
    contract: Contract
    columns: dict[str, str]
    checks: list[Check]

    @property
    def ok_sql(self) -> str:
        """Whether a row passes every check, as one expression over the source's columns.

        The queries that only need the verdict use it rather than the ``_c<i>`` flags: DuckDB then
        folds the checks that cannot fail (a column of its declared type) instead of AND-ing a
        column per check over every row (~0.1 s of a 10M-row audit).
        """
        return " AND ".join(f"coalesce({c.sql}, FALSE)" for c in self.checks) or "TRUE"

    @property
    def flagged_sql(self) -> str:
        """The source columns, a ``_c<i>`` flag per check and ``_ok``: for failure counts and reasons."""
        cols = ", ".join(q(c) for c in self.columns)
        flags = "".join(f", coalesce({c.sql}, FALSE) AS _c{i}" for i, c in enumerate(self.checks))
        every_flag = " AND ".join(f"_c{i}" for i in range(len(self.checks))) or "TRUE"
        inner = f"SELECT {cols}{flags} FROM {self.source}"
        return f"(SELECT *, ({every_flag}) AS _ok FROM ({inner}))"

    @property
    def accepted_sql(self) -> str:
        return f"(SELECT {self._conformed()} FROM {self.source} WHERE {self.ok_sql})"

    @property
    def conformed_ok_sql(self) -> str:
        """Every row, cast to the declared types (NULL where a cast fails), with ``_ok``: one scan
        can aggregate the accepted rows and count the rest."""
        return f"(SELECT {self._conformed()}, ({self.ok_sql}) AS _ok FROM {self.source})"

    @property
    def quarantined_sql(self) -> str:
        reasons = ", ".join(f"CASE WHEN NOT _c{i} THEN {lit(c.label)} END" for i, c in enumerate(self.checks))
        reason = f"concat_ws({lit(REASON_SEPARATOR)}, {reasons})" if self.checks else "''"
        cols = ", ".join(q(c) for c in self.columns)
        return f"(SELECT {cols}, {reason} AS {REASON_COLUMN} FROM {self.flagged_sql} WHERE NOT _ok)"

    def _conformed(self) -> str:
        declared = self.contract.declared_types
        parts = []
        for name, source_type in self.columns.items():
            target = declared.get(name)
            cast = target and target != source_type.split("(")[0] and target != "VARCHAR"
            parts.append(f"TRY_CAST({q(name)} AS {target}) AS {q(name)}" if cast else q(name))
        # An absent column (optional, or required and so failing its table check) arrives as typed
        # NULLs: one schema downstream, and queries over the accepted rows still bind.
        required = [e.column for e in self.contract.expectations if e.type == "expect_column_to_exist"]
        absent = [c for c in dict.fromkeys([*declared, *required]) if c not in self.columns]
        parts += [f"CAST(NULL AS {declared.get(c, 'VARCHAR')}) AS {q(c)}" for c in absent]
        return ", ".join(parts)

    def failure_counts(self) -> tuple[int, Counter]:
        """(rows read, failures per expectation label) in one scan."""
        per_check = "".join(f", count(*) FILTER (WHERE NOT _c{i})" for i in range(len(self.checks)))
        # fetchall, not fetchone: DuckDB keeps a result open until a fetch comes back empty, and
        # refuses other work on the connection (registering a table, say) until then.
        [row] = self.con.execute(f"SELECT count(*){per_check} FROM {self.flagged_sql}").fetchall()
        return row[0], Counter({c.label: n for c, n in zip(self.checks, row[1:]) if n})

    def write_quarantine(self, path: str | Path) -> Path:
        """Write the failing rows with their reasons (``.parquet`` or ``.jsonl``)."""
        return _copy(self.con, self.quarantined_sql, Path(path))


def connect(con: duckdb.DuckDBPyConnection | None = None) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection (new, or ``con`` set up alike: a cursor for another thread, say) that
    reads and prints timestamps in UTC, whatever the machine's zone."""
    con = con or duckdb.connect()
    con.execute("SET TimeZone='UTC'")
    # Streams (COPY of 10M rows) need not keep input order: every ordered output says ORDER BY.
    con.execute("SET preserve_insertion_order=false")
    return con


def check_relation(
    con: duckdb.DuckDBPyConnection,
    source: str,
    contract: Contract,
    duplicates: Mapping[str, pa.Table] | None = None,
    columns: dict[str, str] | None = None,
) -> CheckedRelation:
    """Compile ``contract`` onto ``source`` (a view name or ``(SELECT ...)``) without running it;
    only a uniqueness expectation scans ``source`` now, once, to find the duplicated values,
    unless ``duplicates`` (from ``find_duplicates``) gives them. ``columns`` saves describing
    ``source`` again (a CSV source is sniffed each time: ~60 ms)."""
    if columns is None:
        columns = source_columns(con, source)
    checks = compile_checks(con, columns, contract, source, duplicates)
    return CheckedRelation(con, source, contract, columns, checks)


@dataclass
class ContractResult:
    """The verdict on one table: accepted and quarantined rows, and why."""

    contract: str
    accepted: pa.Table
    quarantined: pa.Table
    failures: Counter = field(default_factory=Counter)  # expectation label -> failing rows
    table_failures: list[str] = field(default_factory=list)

    @property
    def accepted_count(self) -> int:
        return self.accepted.num_rows

    @property
    def quarantined_count(self) -> int:
        return self.quarantined.num_rows

    @property
    def read(self) -> int:
        return self.accepted_count + self.quarantined_count

    @property
    def bad_ratio(self) -> float:
        return self.quarantined_count / self.read if self.read else 0.0

    def summary(self, top: int = 3) -> str:
        reasons = ", ".join(f"{label}: {n}" for label, n in self.failures.most_common(top))
        text = (
            f"{self.contract}: read {self.read}, accepted {self.accepted_count}, "
            f"quarantined {self.quarantined_count}"
        )
        return text + (f" ({reasons})" if reasons else "")


def validate_table(table: pa.Table, contract: Contract, *, cast: bool = True) -> ContractResult:
    """Split ``table`` into accepted and quarantined rows by ``contract``, evaluated in DuckDB.

    With ``cast`` the accepted rows carry the contract's declared types (a string "12" that
    passed ``be_of_type(int)`` arrives as 12), so downstream code never parses again.
    """
    con = connect()
    # A row number keeps both outputs in input order (window checks reorder rows) so that
    # anything sampled downstream is reproducible.
    con.register("_wh_source", table.append_column(ROW_COLUMN, pa.array(range(table.num_rows), pa.int64())))
    checked = check_relation(con, "_wh_source", contract)
    accepted_sql = (
        checked.accepted_sql if cast else f"(SELECT * EXCLUDE (_ok) FROM {checked.flagged_sql} WHERE _ok)"
    )
    keep = ", ".join(q(c) for c in table.column_names)
    extra = "".join(f", {q(c)}" for c in contract.declared_types if cast and c not in table.column_names)
    accepted = con.sql(f"SELECT {keep}{extra} FROM {accepted_sql} ORDER BY {ROW_COLUMN}").to_arrow_table()
    quarantined = con.sql(
        f"SELECT {keep}, {REASON_COLUMN} FROM {checked.quarantined_sql} ORDER BY {ROW_COLUMN}"
    ).to_arrow_table()
    failures = Counter(
        label
        for reason in quarantined.column(REASON_COLUMN).to_pylist()
        for label in reason.split(REASON_SEPARATOR)
        if label
    )
    result = ContractResult(contract.name, accepted, quarantined, failures)
    result.table_failures = table_failures(
        contract, {c: t for c, t in checked.columns.items() if c != ROW_COLUMN}, table.num_rows
    )
    return result


def _copy(con: duckdb.DuckDBPyConnection, sql: str, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix not in (".parquet", ".jsonl"):
        raise ConfigError(f"quarantine files are .parquet or .jsonl, not {path.name}")
    fmt = "PARQUET" if path.suffix == ".parquet" else "JSON"
    con.execute(f"COPY (SELECT * FROM {sql}) TO {lit(str(path))} (FORMAT {fmt})")
    return path


def write_quarantine(result: ContractResult, path: str | Path) -> Path:
    """Write the quarantined rows with their ``_reason`` (``.parquet`` or ``.jsonl``)."""
    con = connect()
    con.register("_wh_quarantine", result.quarantined)
    return _copy(con, "_wh_quarantine", Path(path))


def enforce_bad_row_ratio(result: ContractResult, max_ratio: float, what: str) -> None:
    """Raise ContractError when a table-level expectation failed or too many rows broke the contract.

    ``what`` names the input in the message (file, use case), so the operator knows where to look.
    """
    check_ratio(
        result.contract,
        result.read,
        result.quarantined_count,
        result.failures,
        result.table_failures,
        max_ratio,
        what,
    )


def check_ratio(
    contract: str,
    read: int,
    quarantined: int,
    failures: Counter,
    failed_tables: list[str],
    max_ratio: float,
    what: str,
) -> None:
    """The policy behind ``enforce_bad_row_ratio``, usable with counts from a CheckedRelation."""
    if failed_tables:
        raise ContractError(f"{what} breaks the {contract} contract: {'; '.join(failed_tables)}")
    ratio = quarantined / read if read else 0.0
    if ratio > max_ratio:
        top = ", ".join(f"{label} ({n} rows)" for label, n in failures.most_common(5))
        raise ContractError(
            f"{what}: {quarantined} of {read} rows ({ratio:.1%}) broke the {contract} contract, "
            f"more than the allowed {max_ratio:.1%}. Most frequent: {top}"
        )


# --------------------------------------------------------------------------- Great Expectations


def validate_with_gx(table: pa.Table, contract: Contract, sample: int | None = 10_000) -> dict[str, Any]:
    """Run the suite through Great Expectations itself (ephemeral context) on the first rows.

    A second opinion on the vectorised evaluation; GX imports in 3-5 s, so it is only for
    spot checks and tests. Returns ``{"success": bool, "unexpected": {label: [row indices]}}``;
    expectation types GX does not know, and Python row checks, are left out.
    """
    gx = _import_gx()
    frame = (table.slice(0, sample) if sample else table).to_pandas()
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = {"globally": False}
    batch = (
        context.data_sources.add_pandas("workhorse")
        .add_dataframe_asset(contract.name)
        .add_batch_definition_whole_dataframe("all")
        .get_batch(batch_parameters={"dataframe": frame})
    )
    suite = context.suites.add(gx.ExpectationSuite(name=contract.name))
    _add_to_suite(suite, contract)
    outcome = batch.validate(suite, result_format={"result_format": "COMPLETE"})
    unexpected = {}
    for result in outcome.results:  # GX reorders results: the label travels in meta
        label = result.expectation_config.meta["workhorse_label"]
        unexpected[label] = sorted(result.result.get("unexpected_index_list") or [])
        if not result.success and not unexpected[label]:
            unexpected[label] = ["table"]
    return {"success": outcome.success, "unexpected": unexpected}


def _import_gx():
    try:
        import great_expectations as gx
    except ImportError as error:  # pragma: no cover - it is a declared dependency
        from workhorse.errors import DependencyError

        raise DependencyError(
            "great_expectations is missing: pip install 'great_expectations>=1.2'"
        ) from error
    return gx


def _add_to_suite(suite, contract: Contract) -> None:
    from great_expectations.expectations.expectation_configuration import ExpectationConfiguration

    for e in contract.expectations:
        meta = {**e.meta, "workhorse_label": e.label}
        try:
            suite.add_expectation_configuration(
                ExpectationConfiguration(type=e.type, kwargs=e.kwargs, meta=meta)
            )
        except Exception:  # a type GX does not ship (a workhorse-only one): ours alone judges it
            continue


# --------------------------------------------------------------------------- Prefect tasks

from prefect import task  # noqa: E402  (thin wrappers below the logic they wrap)


@task(name="validate-table")
def validate_rows(
    table: pa.Table, contract_name: str, max_bad_ratio: float, what: str, quarantine_path: str | None = None
) -> ContractResult:
    """Validate, write the quarantine file when rows failed, enforce the bad-row ratio."""
    result = validate_table(table, load_contract(contract_name))
    if quarantine_path and result.quarantined_count:
        write_quarantine(result, quarantine_path)
    enforce_bad_row_ratio(result, max_bad_ratio, what)
    return result
