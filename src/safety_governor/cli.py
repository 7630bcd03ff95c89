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
from .errors import ConfigError, GovernorError, InputError, StoreCorrupt

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def report_failure(exc: GovernorError) -> int:
    """An expected failure as one line on stderr; exit 2 for bad usage or input (a damaged store
    file included: the user must move it aside), else 1."""
    print(f"error: {exc}", file=sys.stderr)
    return EXIT_USAGE if isinstance(exc, (InputError, ConfigError, StoreCorrupt)) else EXIT_FAILED


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
        console.print(results_table(results, compact=console.width < 110))
        console.print(summary_panel(summary, results))
    return EXIT_OK if summary["expectations_failed"] == 0 else EXIT_FAILED


def cmd_seed(args: argparse.Namespace) -> int:
    from .bootstrap import open_store
    from .knowledge import load_knowledge_file, seed_store

    settings = _settings(args)
    data = Path(args.data) if args.data else settings.data_dir / "sample_data.json"
    knowledge = load_knowledge_file(data)
    store = open_store(settings)
    console = Console()
    target = str(settings.resolved_store_path)
    try:
        if settings.elastic_url or settings.elastic_cloud_id:
            knowledge, target = _prepare_elastic(store, knowledge, console)
        report = seed_store(store, knowledge, source=str(data))
        totals = {index: store.count(index) for index in report.counts}
    except GovernorError as exc:
        # Per-document errors (Elasticsearch bulk), one line each; nothing of the load was kept.
        for failure in getattr(exc, "failures", []):
            print(f"error: {failure['index']}/{failure['id']}: {failure['type']}: {failure['reason']}",
                  file=sys.stderr)
        raise
    finally:
        store.close()
    console.print(f"Seeded [bold]{target}[/] from {data}")
    for index, n in report.counts.items():
        console.print(f"  {index:<10} {n:>6} loaded   {totals[index]:>7} in store")
    return EXIT_OK


def _prepare_elastic(store: object, knowledge: dict, console: Console) -> tuple[dict, str]:
    """Create missing indices from mappings/; a Kibana sample-data stream is read as is, not loaded."""
    from .adapters.store_elastic import ElasticStore

    assert isinstance(store, ElasticStore)
    for logical, name, state in store.ensure_indices():
        console.print(f"  index {name:<28} {state}")
        if logical == "logs" and state == "data stream" and knowledge.get("logs"):
            console.print(f"  {name} is a data stream (Kibana sample data): logs not loaded, it is read as is")
            knowledge = {**knowledge, "logs": []}
    return knowledge, f"Elasticsearch at {store.location}"


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
    if getattr(args, "live", False):
        return _assess_live(settings, scenario.incident, as_json=args.json)
    result = run_scenario(scenario, load_knowledge_file(settings.data_dir / "sample_data.json"), settings)
    if args.json:
        print(json.dumps(result.model_dump(mode="json"), indent=2))
    else:
        from .report import results_table

        Console().print(results_table([result]))
    return EXIT_OK if result.expectations_met is not False else EXIT_FAILED


def _assess_live(settings: Settings, incident: object, *, as_json: bool) -> int:
    """One incident through the configured store and agent backend (live mode), claimed first so
    two governors never process it twice; blocked incidents stay pending for a human."""
    import os
    import socket

    from .bootstrap import build, build_approval_policy
    from .cli_approvals import claimed_message, open_durable_wait
    from .models import Incident

    assert isinstance(incident, Incident)
    governor = build(settings)
    waiting = None
    try:
        if not governor.store.claim_incident(incident, f"{socket.gethostname()}:{os.getpid()}"):
            raise InputError(claimed_message(governor.store, incident.id))
        policy = build_approval_policy(settings, ttl_seconds=governor.policy.approval_ttl_seconds)
        record = governor.pipeline.run(incident, approvals=policy)
        if record.final_state == "pending_approval":
            waiting = open_durable_wait(governor, record)
    finally:
        governor.close()
    if as_json:
        print(json.dumps(record.model_dump(mode="json"), indent=2))
        return EXIT_OK
    console = Console()
    gate = record.gate
    console.print(f"[bold]{incident.id}[/] {incident.service} ({incident.severity}) via {record.agent_backend} "
                  f"agent, model {record.model}")
    console.print(f"  proposed action  {gate.proposed_action or '-'}")
    console.print(f"  decision         {gate.decision}  {', '.join(gate.rule_ids) or 'all checks passed'}")
    for reason in gate.reasons:
        console.print(f"    {reason.rule_id}: {reason.message}", markup=False)
    for error in (record.plan_error, record.stress_error):
        if error:
            console.print(f"  agent output     {error}", markup=False)
    console.print(f"  final state      {record.final_state}  (tool calls: {record.tool_calls})")
    if waiting:
        console.print(f"  waiting          for a human on decision {gate.decision_id} (needs {gate.approval_required}); "
                      f"see: approvals list; reply: approvals reply {incident.id} APPROVE|FORCE_OVERRIDE <reason>|"
                      "REJECT (a running dashboard or serve applies it)", markup=False)
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(_settings(args), Path(args.scenarios))


def cmd_mcp(args: argparse.Namespace) -> int:
    import os

    from .mcp_serve import serve

    return serve(_settings(args), http=args.http, host=args.host, port=args.port, path=args.path,
                 environ=os.environ, log_level=args.log_level)


def cmd_serve(args: argparse.Namespace) -> int:
    from .service.headless import serve
    from .service.options import options_from_args

    return serve(_settings(args), options_from_args(args, tui=False), json_lines=args.json, out=sys.stdout,
                 err=sys.stderr)


def cmd_runbooks(args: argparse.Namespace) -> int:
    """Review learned runbook entries on the configured store; approve/revoke is a request for
    the running governor (``cli_approvals.request_runbook_review``)."""
    from .bootstrap import open_store
    from .learning import review_queue

    settings = _settings(args)
    if args.action in ("approve", "revoke"):
        if not args.id:
            raise InputError(f"runbooks {args.action} needs a runbook ID")
    elif args.id:
        raise InputError("runbooks review takes no ID")
    store = open_store(settings)
    try:
        if args.action != "review":
            from .cli_approvals import request_runbook_review

            return request_runbook_review(settings, args, store)
        entries = review_queue(store)
    finally:
        store.close()
    if args.json:
        print(json.dumps(entries, indent=2, default=str))
        return EXIT_OK
    console = Console()
    if not entries:
        console.print("No learned runbook entries are waiting for review.")
    for doc in entries:
        console.print(f"[bold]{doc['id']}[/]  {doc.get('service')}  action {doc.get('recommended_action')}  "
                      f"from {doc.get('incident_id')} (decision {doc.get('decision_id')}, "
                      f"source {doc.get('source')})", highlight=False)
        console.print(f"  {doc.get('title')}", highlight=False, markup=False)
        console.print(f"  {doc.get('body')}", highlight=False, markup=False)
    return EXIT_OK


def cmd_approvals(args: argparse.Namespace) -> int:
    """List the approvals a governor is waiting for, or queue a reply for one of them."""
    from .bootstrap import open_store
    from .cli_approvals import run_approvals

    settings = _settings(args)
    store = open_store(settings)
    try:
        return run_approvals(settings, args, store)
    finally:
        store.close()


def cmd_eval(args: argparse.Namespace) -> int:
    """The decision-quality benchmark: tables (or --json), results JSON and PNG under --out."""
    from rich.progress import Progress

    from .evaluation import parse_assignments, run_benchmark
    from .evaluation.report import render

    settings = _settings(args)
    overrides: dict[str, object] = {k: v for k, v in (("cases", args.cases), ("seed", args.seed),
                                                      ("poison_share", args.poison_share)) if v is not None}
    if args.shares:
        overrides["agent_shares"] = {k: v[0] for k, v in parse_assignments(args.shares, "--shares").items()}
    sweep = parse_assignments(args.sweep, "--sweep") if args.sweep else None
    out = Path(args.out) if args.out else settings.output_dir
    err = Console(stderr=True)
    with Progress(console=err, transient=True, disable=args.json or not err.is_terminal) as bar:
        task = bar.add_task("cases", total=None)
        result = run_benchmark(settings, overrides=overrides, noise_free=args.noise_free, sweep=sweep,
                               world_path=Path(args.world) if args.world else None, out_dir=out,
                               plot=not args.no_plot, progress=lambda done, total: bar.update(task, completed=done,
                                                                                              total=total))
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        Console().print(render(result))
    return EXIT_OK


def cmd_audit(args: argparse.Namespace) -> int:
    """Check the hash chain of every audit file in DIR (default: the output folder)."""
    from .audit_chain import verify
    from .bootstrap import audit_key

    settings = _settings(args)
    target = Path(args.dir) if args.dir else settings.output_dir
    if not target.exists():
        raise InputError(f"{target}: no such file or folder")
    checks = verify(target, audit_key(settings))
    set_aside = sorted(p.name for p in target.glob("*.jsonl.*")) if target.is_dir() else []
    if args.json:
        print(json.dumps({"files": [{"file": c.path.name, "ok": c.ok, "records": c.records,
                                     "first_seq": c.first_seq, "last_seq": c.last_seq, "hash_alg": c.alg,
                                     "line": c.line, "seq": c.seq, "problem": c.problem} for c in checks],
                          "set_aside": set_aside}, indent=2))
    else:
        if not checks:
            print(f"{target}: no audit files (*.jsonl)")
        for check in checks:
            print(check.describe())
        for name in set_aside:
            print(f"note: {name} was set aside (a torn write or a chain that could not continue); "
                  "its new chain records why")
    return EXIT_OK if all(c.ok for c in checks) else EXIT_FAILED


def _overrider(settings: Settings, what: str) -> str:
    """Who runs a guardrail switch: the user the caller's OS account maps to in the approvers file
    (never a name typed on the command line), who must be a configured overrider."""
    from .authority import check_cli_user, load_approvers

    approvers = load_approvers(settings.approvers_path)
    _, user = check_cli_user(approvers, None)
    if not approvers.policy().may_override(user):
        raise InputError(f"{user} is not a configured overrider in {settings.approvers_path}: {what} refused")
    return user


def cmd_freeze(args: argparse.Namespace) -> int:
    """The kill switch: on (with a reason), off, or status."""
    from .bootstrap import open_audit, open_store
    from .guardrails import freeze_status, set_freeze

    settings = _settings(args)
    if args.action == "on" and not (args.reason or "").strip():
        raise InputError('freeze on needs --reason "why" (it is shown to everyone the freeze stops)')
    user = _overrider(settings, f"freeze {args.action}") if args.action != "status" else settings.local_user
    store = open_store(settings)
    try:
        if args.action == "status":
            event = freeze_status(store)
        else:
            event = set_freeze(store, open_audit(settings), on=args.action == "on", by=user,
                               reason=(args.reason or "").strip())
    finally:
        store.close()
    if args.json:
        print(json.dumps({"frozen": bool(event and event.get("on")), "last": event}, indent=2, default=str))
    elif event and event.get("on"):
        print(f"FROZEN since {event.get('at')} by {event.get('by')}: {event.get('reason')}. Nothing executes "
              "automatically; only FORCE_OVERRIDE runs anything.")
    else:
        last = f" (switched off {event.get('at')} by {event.get('by')})" if event else ""
        print(f"not frozen{last}")
    return EXIT_OK


def cmd_breaker(args: argparse.Namespace) -> int:
    """Close a service's circuit breaker after failed verifications."""
    from .bootstrap import open_audit, open_store
    from .guardrails import reset_breaker

    settings = _settings(args)
    if not args.service.strip():
        raise InputError("breaker reset needs a SERVICE")
    user = _overrider(settings, f"breaker reset {args.service}")
    store = open_store(settings)
    try:
        event = reset_breaker(store, open_audit(settings), service=args.service.strip(), by=user,
                              reason=(args.reason or "").strip())
    finally:
        store.close()
    print(f"circuit breaker for {event['service']} reset by {user}: failed verifications before "
          f"{event['at']} no longer count")
    return EXIT_OK


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

    p = sub.add_parser("eval", help="decision-quality benchmark: naive vs seed gate vs ours on seeded cases",
                       description="Generate a seeded world (data/eval_world.json), run every case through the "
                                   "pipeline with agents of several kinds, and compare policies by outcome. "
                                   "Writes eval_results.json and eval_tradeoff.png under --out. "
                                   "Example: python -m safety_governor eval --cases 500 --seed 7")
    p.add_argument("--cases", type=int, help="number of incidents (default: the world file's, 500)")
    p.add_argument("--seed", type=int, help="random seed (default: the world file's)")
    p.add_argument("--shares", help="agent kinds and weights, e.g. honest=1,broken=0.5 (replaces the defaults)")
    p.add_argument("--poison-share", type=float, help="share of evidence documents that are poisoned (0-0.5)")
    p.add_argument("--noise-free", action="store_true",
                   help="no surprises, no wrong, stale or missing documents, no poison")
    p.add_argument("--sweep", help="thresholds of ours to sweep, e.g. contradiction_block_threshold=1/2/3 "
                                   "(several separated by commas; default: contradiction threshold and confidence floor)")
    p.add_argument("--world", help="world file (default: data/eval_world.json)")
    p.add_argument("--out", help="folder for eval_results.json and eval_tradeoff.png (default: output/)")
    p.add_argument("--no-plot", action="store_true", help="skip the PNG")
    p.add_argument("--json", action="store_true", help="print the result document as JSON")
    p.add_argument("--data-dir", help="knowledge folder (default: data/)")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("seed", help="seed the configured store from data/ (same as load_to_elastic.py)",
                       description="Load data/sample_data.json into the configured store, idempotently. "
                                   "With ELASTIC_URL or ELASTIC_CLOUD_ID set: create missing indices from "
                                   "mappings/, bulk-load with stable ids, print per-document errors (exit 1). "
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
    p.add_argument("--live", action="store_true",
                   help="use the configured store and agent backend (ELASTIC_URL, AGENT_BACKEND) instead of an "
                        "isolated replay; the incident is claimed first and runs once")
    p.set_defaults(func=cmd_assess)

    p = sub.add_parser("demo", help="seed the embedded store and replay scenarios/ with a readable report",
                       description="A non-interactive walkthrough: seed an embedded store from data/, replay "
                                   "every scenario in scenarios/ (each in its own isolated store) and print a "
                                   "readable report of what the gate decided and why. For the live dashboard "
                                   "run demo_rich_agentic.py (make demo). Example: python -m safety_governor "
                                   "demo --scenarios scenarios")
    p.add_argument("--scenarios", default="scenarios", help="scenario folder (default: scenarios/)")
    p.set_defaults(func=cmd_demo)
    p = sub.add_parser("approvals", help="list pending approvals, or queue a reply (the local inbox from a shell)",
                       description="The local inbox from a shell: `approvals list`, or `approvals reply INCIDENT "
                                   "TEXT` (APPROVE, FORCE_OVERRIDE <reason>, HOLD, REJECT). The reply is stored and "
                                   "the running governor (the dashboard) applies it by the same approval rules as a "
                                   "key or a Slack reply. Example: python -m safety_governor approvals reply "
                                   "inc-42 FORCE_OVERRIDE db team on the bridge --user alice")
    p.add_argument("action", choices=("list", "reply"))
    p.add_argument("incident", nargs="?", help="incident id (reply)")
    p.add_argument("text", nargs="*", help="the reply text (reply)")
    p.add_argument("--user", help="optional check: refused unless it names the user your OS account maps to in "
                                  "config/approvers.json (identity comes from the account)")
    p.add_argument("--store", help="embedded store file (default: output/governor.db)")
    p.add_argument("--json", action="store_true", help="list as JSON")
    p.set_defaults(func=cmd_approvals)

    p = sub.add_parser("mcp", help="serve the tools over MCP: stdio, or streamable HTTP with --http",
                       description="Serve the nine tools over MCP. stdio by default (logs on stderr); --http "
                                   "serves streamable HTTP at http://HOST:PORT/mcp and, when MCP_SERVER_TOKEN is "
                                   "set, requires 'Authorization: Bearer <token>'. Without a token only a loopback "
                                   "host is allowed. Exit codes: 0 after a clean stop; 2 for bad settings or a port that "
                                   "cannot be bound (in use), before anything is served; 1 when the HTTP server fails "
                                   "during start-up. Example: python -m safety_governor mcp --http --port 8010")
    p.add_argument("--http", action="store_true", help="serve streamable HTTP instead of stdio")
    p.add_argument("--host", default="127.0.0.1", help="HTTP bind address (default: 127.0.0.1)")
    p.add_argument("--port", type=int, default=8010, help="HTTP port (default: 8010)")
    p.add_argument("--path", default="/mcp", help="HTTP endpoint path (default: /mcp)")
    p.add_argument("--store", help="embedded store file (default: output/governor.db)")
    p.add_argument("--log-level", default="warning", choices=("debug", "info", "warning", "error"),
                   help="server log level, on stderr (default: warning)")
    p.set_defaults(func=cmd_mcp)
    from .service.headless import SERVE_DESCRIPTION
    from .service.options import add_mode_arguments

    p = sub.add_parser("serve", help="run the incident service headless (same modes as the dashboard)",
                       description=SERVE_DESCRIPTION + " Example: python -m safety_governor serve --autopilot --json")
    add_mode_arguments(p)
    p.add_argument("--json", action="store_true", help="JSON lines on stdout (activity and incident states)")
    p.add_argument("--store", help="embedded store file (default: output/governor.db)")
    p.set_defaults(func=cmd_serve)
    p = sub.add_parser("runbooks", help="review learned runbook entries: review | approve ID | revoke ID",
                       description="Learned runbook entries wait as pending_review and are not used as plans "
                                   "or evidence until a configured approver approves them; revoking takes an "
                                   "entry out of retrieval. approve/revoke store a request that the running "
                                   "governor authorises with its own approvers file and applies once (it waits "
                                   "for the next governor when none runs). Example: python -m safety_governor "
                                   "runbooks approve rbk-learned-0123abcd4567")
    p.add_argument("action", choices=("review", "approve", "revoke"), help="what to do")
    p.add_argument("id", nargs="?", help="runbook id (approve, revoke)")
    p.add_argument("--user", help="optional check: refused unless it names the user your OS account maps to in "
                                  "config/approvers.json (who must be a configured approver)")
    p.add_argument("--reason", help="why (revoke)")
    p.add_argument("--wait", type=float, default=10.0, metavar="SECONDS",
                   help="how long to wait for a running governor's outcome (default 10; 0: do not wait)")
    p.add_argument("--store", help="embedded store file (default: output/governor.db)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_runbooks)
    p = sub.add_parser("audit", help="verify the hash chain of the audit trail: audit verify [DIR]",
                       description="Check every output/*.jsonl (or DIR, or one FILE): one line per file "
                                   "(records, first and last seq) or the first broken record (line, seq, what "
                                   "differs). Exit 1 on any break. With AUDIT_HMAC_KEY set the chains must be "
                                   "HMACs under that key. Example: python -m safety_governor audit verify output")
    p.add_argument("action", choices=("verify",))
    p.add_argument("dir", nargs="?", metavar="DIR", help="folder or file (default: the output folder)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_audit)

    p = sub.add_parser("freeze", help="the kill switch: freeze on --reason ... | off | status",
                       description="While frozen nothing executes automatically (gate rule 'frozen'), "
                                   "approvals other than FORCE_OVERRIDE run nothing, and every governor on the "
                                   "same store sees it. on/off: configured overriders only, audited. Example: "
                                   'python -m safety_governor freeze on --reason "db migration in progress"')
    p.add_argument("action", choices=("on", "off", "status"))
    p.add_argument("--reason", help="why (required for on)")
    p.add_argument("--store", help="embedded store file (default: output/governor.db)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_freeze)

    p = sub.add_parser("breaker", help="reset a service's circuit breaker: breaker reset SERVICE",
                       description="After failed verifications on a service the gate blocks its automatic "
                                   "executions (rule 'circuit_open') until an overrider resets it. Audited. "
                                   "Example: python -m safety_governor breaker reset payments-api")
    p.add_argument("action", choices=("reset",))
    p.add_argument("service", metavar="SERVICE")
    p.add_argument("--reason", help="why")
    p.add_argument("--store", help="embedded store file (default: output/governor.db)")
    p.set_defaults(func=cmd_breaker)
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
    except GovernorError as exc:
        return report_failure(exc)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
