"""The Rich dashboard (``demo_rich_agentic.py``): four workers, telemetry, detection, approvals.

Modules: ``state`` (immutable snapshots, events, reducer), ``panels`` (renderables), ``theme``,
``app`` (command line and loops), ``controller`` (keys), ``keyboard`` (cbreak terminal input),
``runtime`` (wiring), ``workers`` (logs, audit, agent, slack), ``telemetry`` (the simulated
production), ``detection`` (error clusters), ``logtail`` (tailing the store's logs).
"""
