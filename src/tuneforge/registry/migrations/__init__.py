"""Alembic migrations of the registry, applied when a registry opens (db.upgrade_to_head).

A package so that setuptools ships env.py and versions/*.py in every install; nothing
imports it.
"""
