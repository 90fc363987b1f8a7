"""Benchmarks: each module starts the stack on free loopback ports and prints a table."""
