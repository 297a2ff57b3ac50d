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
except ModuleNotFoundError as err:
    sys.exit(
        f"error: {err.name} is not importable from {sys.executable}; run `make install` and use "
        ".venv/bin/python (or ./run.sh, which finds it)"
    )


if __name__ == "__main__":
    sys.exit(main())
