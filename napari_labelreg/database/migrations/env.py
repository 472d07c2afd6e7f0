"""Alembic's environment for the label database: migrations run on the connection (and inside the transaction)
that :func:`napari_labelreg.database.schema.migrate` hands over; nothing is read from an alembic.ini."""

from alembic import context

from napari_labelreg.database.schema import metadata

context.configure(connection=context.config.attributes["connection"], target_metadata=metadata)
with context.begin_transaction():
    context.run_migrations()
