"""Offline demo corpus: real speech synthesizers laid out like MLAAD v5 + MUSAN + RIRS_NOISES.

Build it with ``scripts/make_demo_corpus.py`` or ``sourcetracing_tools.demo.corpus.build_corpus``; the
plan of systems is ``sourcetracing_tools.demo.corpus.PLAN``.
"""
