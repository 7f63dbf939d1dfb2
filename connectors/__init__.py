"""Connectors: one folder per protocol. Importing this package imports no protocol library."""
