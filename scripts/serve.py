#!/usr/bin/env python
"""Serve a local web page that traces clips with a tracer bundle (scripts/export_bundle.py).

python scripts/serve.py --bundle bundles/demo            # then open http://127.0.0.1:8000
python scripts/serve.py --bundle bundles/demo.tar.gz --port 8080 --max-mb 20 --max-seconds 60

The page binds to 127.0.0.1 unless --host says otherwise; nothing it uses comes from the internet.
Its decisions are those of `scripts/trace.py --bundle` on the same clips.
"""

import argparse
import sys

try:
    from sourcetracing.cli import report_error
    from sourcetracing.errors import SourceTracingError
    from sourcetracing.web import Limits, create_app
except ModuleNotFoundError as err:
    sys.exit(
        f"error: {err.name} is not importable from {sys.executable}; run `make install` and use "
        ".venv/bin/python (or ./run.sh, which finds it)"
    )


def _positive_number(text: str) -> float:
    """An argparse type: a number above 0."""
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a number above 0, got {text}")
    return value


def main(argv: list[str] | None = None) -> int:
    """Parse the options, load the bundle and serve the page until interrupted."""
    from werkzeug.serving import make_server

    parser = argparse.ArgumentParser(
        description="Serve a page that traces clips with a tracer bundle (scripts/export_bundle.py); "
        "it binds to 127.0.0.1 unless --host says otherwise."
    )
    parser.add_argument("--bundle", required=True, help="a tracer bundle: folder, .tar.gz or .zip")
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)"
    )
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    parser.add_argument(
        "--max-mb", type=_positive_number, default=20.0, help="largest file in MB (default 20)"
    )
    parser.add_argument(
        "--max-seconds", type=_positive_number, default=60.0, help="longest clip in seconds (default 60)"
    )
    parser.add_argument("--device", default="cpu", help="auto | cpu | cuda (default cpu)")
    args = parser.parse_args(argv)
    try:
        app = create_app(args.bundle, Limits(args.max_mb, args.max_seconds), args.device)
    except SourceTracingError as err:
        return report_error(err)
    server = make_server(args.host, args.port, app, threaded=True)
    print(f"serving {args.bundle} on http://{args.host}:{server.port} (Ctrl-C stops)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
