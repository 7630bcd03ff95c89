"""A local fake of Kibana Agent Builder on 127.0.0.1 (see ``FakeKibana``)."""

from __future__ import annotations

import re
from typing import Any

from wire_fakes import Recorded, RecordingServer, Reply


class FakeKibana(RecordingServer):
    """Kibana Agent Builder's converse and conversation routes, with conversations kept in memory.

    Built from elastic/kibana's ``agent_builder/server/routes/chat.ts`` (``POST
    /api/agent_builder/converse``: ``input``, ``agent_id``, ``conversation_id``; the reply carries
    ``conversation_id``, ``round_id``, ``steps``, ``response.message``), the conversations route and
    its example ``conversations_get_by_id.yaml`` (``GET /api/agent_builder/conversations/<id>`` with
    ``rounds: [{id, input: {message}, steps, response: {message}}]``), and ``wrap_handler.ts``, which
    turns any error in the handler into ``{statusCode, error, message}`` with status 500. A round
    runs (and is recorded) before the answer is sent, so ``fail_after_recording`` makes a round
    answer 500 although it completed: the case a client must not run again.

    Args:
        answers: the agent's replies, in order: ``(message, steps)``.
        fail_after_recording: 1-based numbers of converse calls that record their round, then
            answer 500.
    """

    def __init__(self, answers: list[tuple[str, list[dict[str, Any]]]], *,
                 fail_after_recording: tuple[int, ...] = ()) -> None:
        super().__init__(self._route)
        self.answers = list(answers)
        self.fail_after_recording = set(fail_after_recording)
        self.conversations: dict[str, dict[str, Any]] = {}
        self.converse_calls = 0

    def _route(self, req: Recorded) -> Reply:
        if req.method == "POST" and req.path.endswith("/api/agent_builder/converse"):
            return self._converse(req.json() or {})
        match = re.search(r"/api/agent_builder/conversations/([^/]+)$", req.path)
        if req.method == "GET" and match:
            conversation = self.conversations.get(match.group(1))
            if conversation is None:
                return self._error(404, f"Conversation {match.group(1)} not found")
            return Reply(200, conversation)
        return self._error(404, "Not Found")

    @staticmethod
    def _error(status: int, message: str) -> Reply:
        phrases = {404: "Not Found", 500: "Internal Server Error"}
        return Reply(status, {"statusCode": status, "error": phrases.get(status, "Error"), "message": message})

    def _converse(self, body: dict[str, Any]) -> Reply:
        self.converse_calls += 1
        conversation_id = body.get("conversation_id") or f"conv-{len(self.conversations) + 1}"
        conversation = self.conversations.get(conversation_id)
        if conversation is None:
            if body.get("conversation_id"):
                return self._error(404, f"Conversation {conversation_id} not found")
            conversation = self.conversations[conversation_id] = {
                "id": conversation_id, "agent_id": body.get("agent_id"), "title": "incident", "rounds": []}
        if not self.answers:
            return self._error(500, "no scripted answer left")
        message, steps = self.answers.pop(0)
        round_ = {"id": f"round-{self.converse_calls}", "input": {"message": body.get("input")},
                  "steps": steps, "response": {"message": message}, "status": "completed"}
        conversation["rounds"].append(round_)
        if self.converse_calls in self.fail_after_recording:
            return self._error(500, "An internal server error occurred while saving the conversation")
        return Reply(200, {"conversation_id": conversation_id, "round_id": round_["id"], "status": "completed",
                           "steps": steps, "response": {"message": message}})
