"""Revision scripts of the device store, applied in order by Alembic."""
