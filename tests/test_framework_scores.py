"""Framework scores: the bundled table, and the hosted CDCT/DDFT/EECT APIs via a local HTTP server
that answers in each API's documented shapes."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from safety_governor.adapters.framework_scores import BundledScores, HostedScores
from safety_governor.config import DEFAULT_DATA_DIR

TABLE = BundledScores(DEFAULT_DATA_DIR / "model_profiles.json")


def test_bundled_table_matches_names_and_aliases_case_insensitively():
    a = TABLE.scores("gpt-oss-120b")
    b = TABLE.scores("GPT-OSS")
    assert a == b and a.source == "bundled"
    assert a.ecs == pytest.approx(8.806) and a.ci == pytest.approx(0.659)
    assert a.u_curve_magnitude == pytest.approx(0.3644)


def test_unknown_model_has_no_scores_and_no_u_curve():
    unknown = TABLE.scores("my-private-llm")
    assert unknown.source == "none" and unknown.ecs == 0 and unknown.u_curve_magnitude is None


class _Handler(BaseHTTPRequestHandler):
    routes: dict[str, tuple[int, object]] = {}

    def do_GET(self):  # noqa: N802 (http.server API)
        status, body = self.routes.get(self.path, (404, {"detail": "Model not found"}))
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


@pytest.fixture
def score_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_hosted_apis_in_their_documented_shapes_with_ecs_normalised(score_server):
    server, url = score_server
    _Handler.routes = {
        "/score/o3": (200, {"HOC": 0.9, "CI": 0.7}),
    }
    # No CDCT URL: the u-curve comes from the table. The newer EECT API: one dict, ecs on 0-1.
    scores = HostedScores(TABLE, ddft_url=url, eect_url=url + "/eect", timeout=2)
    _Handler.routes["/eect/score/o3"] = (200, {"ecs": 0.75, "as_score": 0.6, "stability_index": 1.02})
    result = scores.scores("o3")
    assert result.ci == pytest.approx(0.7) and result.hoc == pytest.approx(0.9)
    assert result.ecs == pytest.approx(7.5)
    assert result.as_score == pytest.approx(0.6)
    assert result.u_curve_magnitude == pytest.approx(TABLE.scores("o3").u_curve_magnitude)
    assert result.source == "hosted+bundled"


def test_hosted_failure_falls_back_to_the_table(score_server):
    server, url = score_server
    _Handler.routes = {"/score/gpt-5": (500, {"error": "boom"})}
    scores = HostedScores(TABLE, ddft_url=url, eect_url="http://127.0.0.1:9", timeout=0.5)
    assert scores.scores("gpt-5") == TABLE.scores("gpt-5")


def test_lowercase_and_list_shapes_are_accepted(score_server):
    server, url = score_server
    _Handler.routes = {"/score/phi-4": (200, [{"CI": 0.4, "SAS_prime": 0.8}, {"CI": 0.6}])}
    result = HostedScores(TABLE, ddft_url=url, timeout=2).scores("phi-4")
    assert result.ci == pytest.approx(0.5)
