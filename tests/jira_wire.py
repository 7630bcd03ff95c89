"""A local fake of Jira Cloud's REST API v2 on 127.0.0.1, speaking its wire format.

What the ``jira`` client calls for our flow: ``GET /rest/api/2/serverInfo`` (Cloud),
``GET /rest/api/2/field``, ``GET /rest/api/2/search/jql`` (the current search; the removed
``/rest/api/2/search`` answers 410 Gone as Cloud does), ``POST /rest/api/2/issue`` (201),
``GET /rest/api/2/issue/KEY``, ``POST …/comment`` (201), ``GET/POST …/transitions`` (204),
``GET /rest/api/2/myself``. Basic auth is checked on every call.

Built from Atlassian's REST v2 reference and its "Search and reconcile" guide
(developer.atlassian.com/cloud/jira/platform/search-and-reconcile): ``/search/jql`` is eventually
consistent, so an issue created through the API stays out of search results until ``index()`` is
called (the search index catching up), unless its id is passed in ``reconcileIssues`` (at most 50),
as on Jira Cloud.
"""

from __future__ import annotations

import base64
import json
import re
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

EMAIL = "governor@example.com"
TOKEN = "jira-test-token"

# A workflow whose done state is not called "Done": only its status category says so.
STATUSES = {
    "Open": {"name": "Open", "statusCategory": {"key": "new", "name": "To Do"}},
    "Investigating": {"name": "Investigating", "statusCategory": {"key": "indeterminate", "name": "In Progress"}},
    "Released": {"name": "Released", "statusCategory": {"key": "done", "name": "Done"}},
}
TRANSITIONS = {
    "Open": [
        {"id": "21", "name": "Investigate", "to": STATUSES["Investigating"]},
        {"id": "51", "name": "Ship it", "to": STATUSES["Released"],
         "fields": {"resolution": {"required": True, "name": "Resolution",
                                   "allowedValues": [{"name": "Won't Do"}, {"name": "Fixed"}]}}},
    ],
    "Investigating": [{"id": "51", "name": "Ship it", "to": STATUSES["Released"]}],
    "Released": [{"id": "61", "name": "Reopen", "to": STATUSES["Open"]}],
}


@dataclass
class Call:
    method: str
    path: str
    query: dict[str, list[str]]
    body: Any


class FakeJira:
    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.issues: dict[str, dict[str, Any]] = {}
        self.comments: dict[str, list[str]] = {}
        self.failures: list[tuple[str, str, int]] = []  # (method, path regex, status), consumed in order
        self.down_status: int | None = None
        self._seq = 100
        self.unindexed: set[str] = set()  # keys created through the API that search cannot see yet
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length).decode() if length else ""
                url = urlparse(self.path)
                body = json.loads(raw) if raw else None
                status, answer = fake._answer(self.command, url.path, parse_qs(url.query), body,
                                              self.headers.get("Authorization", ""))
                data = b"" if answer is None else json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json;charset=UTF-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> FakeJira:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def paths(self, method: str | None = None) -> list[str]:
        return [c.path for c in self.calls if method is None or c.method == method]

    def index(self) -> None:
        """The search index catches up with every write."""
        self.unindexed.clear()

    def add_issue(self, key: str, summary: str, labels: list[str], status: str = "Open") -> None:
        self._seq += 1
        self.issues[key] = {"id": str(self._seq), "key": key, "self": f"{self.url}/rest/api/2/issue/{self._seq}",
                            "fields": {"summary": summary, "labels": labels, "status": STATUSES[status]}}

    def _answer(self, method: str, path: str, query: dict[str, list[str]], body: Any,
                auth: str) -> tuple[int, Any]:
        self.calls.append(Call(method, path, query, body))
        if self.down_status is not None:
            return self.down_status, {"errorMessages": ["Service unavailable"], "errors": {}}
        for i, (m, pattern, status) in enumerate(self.failures):
            if m == method and re.fullmatch(pattern, path):
                del self.failures[i]
                return status, {"errorMessages": [f"scripted {status}"], "errors": {}}
        expected = "Basic " + base64.b64encode(f"{EMAIL}:{TOKEN}".encode()).decode()
        if auth != expected:
            return 401, {"errorMessages": ["Client must be authenticated to access this resource."]}
        p = path.removeprefix("/rest/api/2/")
        if p == "serverInfo":
            return 200, {"baseUrl": self.url, "version": "1001.0.0-SNAPSHOT", "versionNumbers": [1001, 0, 0],
                         "deploymentType": "Cloud", "buildNumber": 100280, "serverTitle": "Fake Jira"}
        if p == "myself":
            return 200, {"accountId": "5b10a2844c20165700ede21g", "displayName": "Safety Governor"}
        if p == "field":
            return 200, [{"id": "summary", "name": "Summary", "clauseNames": ["summary"]},
                         {"id": "labels", "name": "Labels", "clauseNames": ["labels"]}]
        if p == "search":
            return 410, {"errorMessages": ["The requested API has been removed. Please migrate to the "
                                           "/rest/api/3/search/jql API."]}
        if p == "search/jql":
            jql = query.get("jql", [""])[0]
            label = re.search(r'labels = "([^"]+)"', jql)
            project = re.search(r'project = "([^"]+)"', jql)
            reconcile = [v for raw in query.get("reconcileIssues", []) for v in raw.split(",") if v]
            if len(reconcile) > 50:
                return 400, {"errorMessages": ["reconcileIssues accepts at most 50 issue ids."]}
            found = [i for i in self.issues.values()
                     if (i["key"] not in self.unindexed or i["id"] in reconcile)
                     and (not label or label.group(1) in i["fields"]["labels"])
                     and (not project or i["key"].startswith(project.group(1) + "-"))]
            return 200, {"issues": found, "isLast": True}
        if p == "issue" and method == "POST":
            fields = body["fields"]
            key = f"{fields['project']['key']}-{self._seq + 1}"
            self.add_issue(key, fields["summary"], list(fields.get("labels", [])))
            self.issues[key]["fields"].update({k: v for k, v in fields.items() if k not in ("labels", "summary")})
            self.unindexed.add(key)
            issue = self.issues[key]
            return 201, {"id": issue["id"], "key": key, "self": issue["self"]}
        m = re.fullmatch(r"issue/([A-Z]+-\d+)(/comment|/transitions)?", p)
        if m:
            key, sub = m.group(1), m.group(2)
            issue = self.issues.get(key)
            if issue is None:
                return 404, {"errorMessages": ["Issue does not exist or you do not have permission to see it."],
                             "errors": {}}
            if sub is None:
                return 200, issue
            if sub == "/comment" and method == "POST":
                self.comments.setdefault(key, []).append(body["body"])
                return 201, {"id": str(len(self.comments[key])), "body": body["body"],
                             "self": f"{self.url}/rest/api/2/issue/{key}/comment/{len(self.comments[key])}"}
            status = issue["fields"]["status"]["name"]
            if sub == "/transitions" and method == "GET":
                return 200, {"expand": "transitions", "transitions": TRANSITIONS[status]}
            if sub == "/transitions" and method == "POST":
                wanted = str(body["transition"]["id"])
                match = [t for t in TRANSITIONS[status] if t["id"] == wanted]
                if not match:
                    return 400, {"errorMessages": [f"Transition id '{wanted}' is not valid for this issue."]}
                required = [n for n, f in (match[0].get("fields") or {}).items() if f.get("required")]
                given = body.get("fields") or {}
                if any(n not in given for n in required):
                    return 400, {"errorMessages": [], "errors": {n: f"{n} is required." for n in required}}
                issue["fields"]["status"] = match[0]["to"]
                issue["fields"]["resolution"] = given.get("resolution")
                for c in (body.get("update") or {}).get("comment", []):
                    self.comments.setdefault(key, []).append(c["add"]["body"])
                return 204, None
        return 404, {"errorMessages": [f"no fake for {method} {path}"]}
