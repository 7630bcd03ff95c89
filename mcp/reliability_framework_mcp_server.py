#!/usr/bin/env python3
"""Safety Governor MCP server entry: the nine tools over stdio (default) or streamable HTTP.

    python mcp/reliability_framework_mcp_server.py                 # stdio, for MCP hosts that spawn it
    python mcp/reliability_framework_mcp_server.py --http          # http://127.0.0.1:8010/mcp

Same as ``python -m safety_governor mcp``. The server itself is ``safety_governor.mcp_server``
(``build_server``); this file only parses arguments. No ``__init__.py`` lives in this folder: it
would shadow the ``mcp`` SDK package.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from dotenv import load_dotenv


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--http", action="store_true", help="serve streamable HTTP instead of stdio")
    parser.add_argument("--host", default="127.0.0.1", help="HTTP bind address (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8010, help="HTTP port (default: 8010)")
    parser.add_argument("--path", default="/mcp", help="HTTP endpoint path (default: /mcp)")
    parser.add_argument("--store", help="embedded store file (default: output/governor.db)")
    parser.add_argument("--log-level", default="warning", choices=("debug", "info", "warning", "error"))
    args = parser.parse_args(argv)
    load_dotenv()

    from safety_governor.config import Settings
    from safety_governor.cli import report_failure
    from safety_governor.errors import GovernorError
    from safety_governor.mcp_serve import serve

    try:
        settings = Settings.from_env()
        if args.store:
            settings = settings.model_copy(update={"store_path": Path(args.store)})
        return serve(settings, http=args.http, host=args.host, port=args.port, path=args.path,
                     environ=os.environ, log_level=args.log_level)
    except GovernorError as exc:
        return report_failure(exc)


if __name__ == "__main__":
    raise SystemExit(main())
