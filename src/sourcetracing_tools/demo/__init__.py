"""Offline demo corpus: real speech synthesizers laid out like MLAAD v5 + MUSAN + RIRS_NOISES.

Build it with ``scripts/make_demo_corpus.py`` or ``sourcetracing_tools.demo.corpus.build_corpus``; the
plans of systems are in ``sourcetracing_tools.demo.corpus.PLANS`` (``default``: distinct systems;
``hard``: near-twins and channels, ``sourcetracing_tools.demo.channel``).
"""
