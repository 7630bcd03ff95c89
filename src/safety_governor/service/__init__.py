"""The incident service: the lifecycle of every incident below every face.

The four workers (logs, audit, agent, slack), the durable approval waits and the remediation
queue live here. The Rich dashboard (``tui/``), ``--no-tui`` and the headless ``serve`` command
all run this same service (``runtime.Runtime``), subscribe to its events (``events.EventBus``)
and send replies into its inbox. Nothing here imports ``tui/``.
"""
