"""Importers: turn measurements from real hosts into scenarios (``memtune import ...``)."""
