#!/usr/bin/env python
"""Serve a local web page that traces clips with a tracer bundle (scripts/export_bundle.py).

python scripts/serve.py --bundle bundles/demo            # then open http://127.0.0.1:8000
python scripts/serve.py --bundle bundles/demo.tar.gz --port 8080 --max-mb 20 --max-seconds 60

The page binds to 127.0.0.1 unless --host says otherwise; nothing it uses comes from the internet.
Its decisions are those of `scripts/trace.py --bundle` on the same clips.
"""

import sys

try:
    from sourcetracing.web import main
except ModuleNotFoundError as err:
    sys.exit(
        f"error: {err.name} is not importable from {sys.executable}; run `make install` and use "
        ".venv/bin/python (or ./run.sh, which finds it)"
    )

if __name__ == "__main__":
    sys.exit(main())
