"""Workflows the sandbox tests register and run: one module per family of node types and data types."""
