"""Bring an existing ledger database up to the current ``runs`` table: add the columns it lacks.

``create_all`` creates missing tables but never changes existing ones, so a ledger written by
an older version would lack newer (nullable) columns. Old rows read those columns as NULL.
"""

from __future__ import annotations

import sqlalchemy as sa


def add_missing_columns(engine: sa.Engine, table: sa.Table) -> list[str]:
    """``ALTER TABLE … ADD COLUMN`` for every nullable column of ``table`` the database lacks; returns their names.

    Runs in one transaction: on SQLite it begins IMMEDIATE (the ledger's ``begin`` listener), so
    workers starting together migrate one after the other and the later ones find nothing to add;
    on PostgreSQL and MySQL the caller holds :func:`harness.runs.storage.initialization_lock`.
    """
    with engine.begin() as connection:
        present = {column["name"] for column in sa.inspect(connection).get_columns(table.name)}
        missing = [column for column in table.columns if column.name not in present]
        for column in missing:
            if not column.nullable:
                raise RuntimeError(f"cannot add the NOT NULL column {column.name!r} to an existing {table.name!r}")
            kind = column.type.compile(dialect=engine.dialect)
            preparer = engine.dialect.identifier_preparer
            connection.exec_driver_sql(
                f"ALTER TABLE {preparer.format_table(table)} ADD COLUMN {preparer.format_column(column)} {kind}")
    return [column.name for column in missing]
