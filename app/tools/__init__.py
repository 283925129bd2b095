"""Tools for the first hour on a Pi: find and probe ports, capture raw bytes, check a config."""
