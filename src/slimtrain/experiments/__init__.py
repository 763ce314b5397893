"""Experiments built on trained runs: sweep compression levels, compare methods, write reports."""
