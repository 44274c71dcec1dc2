"""Measurements of miaopi's own parts, shared by the CLI (``miaopi bench``) and pytest-benchmark."""
