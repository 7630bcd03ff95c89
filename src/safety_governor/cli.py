"""``python -m safety_governor``: a thin shell over the library, one function per subcommand.

Expected failures print one line (``error: …``) and exit 2 for bad usage or input, 1 otherwise;
never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from dotenv import load_dotenv
from rich.console import Console

from . import __version__
from .config import Settings
from .errors import ConfigError, GovernorError, InputError

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _settings(args: argparse.Namespace) -> Settings:
    settings = Settings.from_env()
    updates = {}
    if getattr(args, "data_dir", None):
        updates["data_dir"] = Path(args.data_dir)
    if getattr(args, "store", None):
        updates["store_path"] = Path(args.store)
    return settings.model_copy(update=updates) if updates else settings


def cmd_replay(args: argparse.Namespace) -> int:
    from .replay import replay
    from .report import results_table, summary_panel

    results, summary = replay(args.paths, _settings(args))
    if args.json:
        print(json.dumps({"results": [r.model_dump(mode="json") for r in results], "summary": summary}, indent=2))
    else:
        console = Console()
        console.print(results_table(results))
        console.print(summary_panel(summary, results))
    return EXIT_OK if summary["expectations_failed"] == 0 else EXIT_FAILED


def cmd_seed(args: argparse.Namespace) -> int:
    from .bootstrap import open_store
    from .knowledge import load_knowledge_file, seed_store

    settings = _settings(args)
    data = Path(args.data) if args.data else settings.data_dir / "sample_data.json"
    knowledge = load_knowledge_file(data)
    store = open_store(settings)
    try:
        report = seed_store(store, knowledge, source=str(data))
        totals = {index: store.count(index) for index in report.counts}
    finally:
        store.close()
    console = Console()
    console.print(f"Seeded [bold]{settings.resolved_store_path}[/] from {data}")
    for index, n in report.counts.items():
        console.print(f"  {index:<10} {n:>6} loaded   {totals[index]:>7} in store")
    return EXIT_OK


def cmd_contracts(args: argparse.Namespace) -> int:
    from .contracts import CONTRACTS_DIR, drifted, write_schemas

    if args.check:
        problems = drifted()
        for problem in problems:
            print(f"contracts/{problem}", file=sys.stderr)
        if problems:
            print("error: contracts drifted from the models; run `python -m safety_governor contracts`",
                  file=sys.stderr)
            return EXIT_FAILED
        print("contracts up to date")
        return EXIT_OK
    for path in write_schemas():
        print(path.relative_to(CONTRACTS_DIR.parent))
    return EXIT_OK


def cmd_assess(args: argparse.Namespace) -> int:
    """Run one incident (or scenario file) through the pipeline in an isolated store."""
    from .replay import load_scenario, run_scenario
    from .knowledge import load_knowledge_file

    settings = _settings(args)
    scenario = load_scenario(Path(args.path))
    result = run_scenario(scenario, load_knowledge_file(settings.data_dir / "sample_data.json"), settings)
    if args.json:
        print(json.dumps(result.model_dump(mode="json"), indent=2))
    else:
        from .report import results_table

        Console().print(results_table([result]))
    return EXIT_OK if result.expectations_met is not False else EXIT_FAILED


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(_settings(args), Path(args.scenarios))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m safety_governor",
        description="Safety Governor: gate AI-proposed remediations with evidence, policies and humans.",
    )
    parser.add_argument("--version", action="version", version=f"safety-governor {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("replay", help="replay scenario files (or folders of them), each in an isolated store",
                       description="Replay scenarios. Exit 0 when every expectation holds, 1 otherwise, "
                                   "2 for unreadable input. Example: python -m safety_governor replay scenarios")
    p.add_argument("paths", nargs="+", metavar="PATH", help="scenario file or folder")
    p.add_argument("--json", action="store_true", help="print one JSON object {results, summary}")
    p.add_argument("--data-dir", help="knowledge folder (default: data/)")
    p.set_defaults(func=cmd_replay)

    p = sub.add_parser("seed", help="seed the configured store from data/ (same as load_to_elastic.py)",
                       description="Load data/sample_data.json into the configured store, idempotently. "
                                   "Example: python -m safety_governor seed --store output/governor.db")
    p.add_argument("--data", help="knowledge file (default: data/sample_data.json)")
    p.add_argument("--store", help="embedded store file (default: output/governor.db)")
    p.set_defaults(func=cmd_seed)

    p = sub.add_parser("contracts", help="regenerate contracts/*.schema.json from the models",
                       description="Write the JSON Schemas, or with --check fail when they drifted.")
    p.add_argument("--check", action="store_true", help="compare instead of writing")
    p.set_defaults(func=cmd_contracts)

    p = sub.add_parser("assess", help="run one incident or scenario file through the pipeline",
                       description="Example: python -m safety_governor assess scenarios/incident_high.json")
    p.add_argument("path", help="incident or scenario JSON file")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--data-dir", help="knowledge folder (default: data/)")
    p.set_defaults(func=cmd_assess)

    p = sub.add_parser("demo", help="seed the embedded store and replay scenarios/ with a readable report")
    p.add_argument("--scenarios", default="scenarios", help="scenario folder (default: scenarios/)")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    load_dotenv()
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        return int(args.func(args))
    except (InputError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except GovernorError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
