"""Tooling around the sourcetracing library: the offline demo corpus builder, resource downloads and benchmarks.

Nothing in :mod:`sourcetracing` imports from here; scripts and tests do.
"""
