"""Thin command-line interface: parse, then call the library."""
