"""Alembic environment: runs migrations on the connection the store hands over
(``config.attributes["connection"]``), or on ``sqlalchemy.url`` when run from the command line."""

from alembic import context
from sqlalchemy import create_engine

from winnow.service.store.tables import metadata

config = context.config


def run_migrations() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = create_engine(config.get_main_option("sqlalchemy.url"))
    with engine.begin() as connection:
        _run(connection)


def _run(connection) -> None:
    # render_as_batch: SQLite alters tables by copying them, which batch mode does for us.
    context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


run_migrations()
