"""Stage 0: download and unpack MLAAD v5, its source-tracing protocols, MUSAN and RIRS_NOISES into ``data/``.

    python scripts/download_resources.py                      # everything
    python scripts/download_resources.py --only protocols,rirs
    python scripts/download_resources.py --base-url http://mirror.local/corpora --no-extract

Safe to re-run: partial downloads resume, verified archives and extracted resources are skipped.
The logic lives in the package :mod:`sourcetracing_tools.download`, its command line in ``download.cli``.
"""

from __future__ import annotations

import sys

try:
    from sourcetracing_tools.download.cli import main
except ImportError as err:  # the package is not installed and src/ is not on PYTHONPATH
    sys.exit(f"cannot import sourcetracing ({err}); run `pip install -e .` or set PYTHONPATH=src")


if __name__ == "__main__":
    sys.exit(main())
