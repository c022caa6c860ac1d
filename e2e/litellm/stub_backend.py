#!/usr/bin/env python3
"""A tiny OpenAI-compatible upstream for the LiteLLM e2e test (Python standard library only).

It stands in for every backend of a rendered gateway config: vLLM and the OpenAI-compatible
APIs (POST .../v1/chat/completions), Mistral (same path), Azure OpenAI
(POST /openai/deployments/<deployment>/chat/completions?api-version=...), and, for the
Langfuse callback, Langfuse's ingestion API (POST /api/public/ingestion, answered 207).

Usage: stub_backend.py PORT LOG_FILE   (listens on 127.0.0.1 only)

Chat answers carry deterministic usage numbers (as in ../shared/fixtures/litellm):
  prompt_tokens     = 7 + total characters of all message contents // 4
  completion_tokens = 5 + (prompt_tokens * 3) % 41
Every request is appended to LOG_FILE as one JSON line:
  {"kind": "chat", "path", "query", "model" (the upstream model or Azure deployment asked for),
   "authorization", "prompt_tokens", "completion_tokens"}  or  {"kind": "langfuse", "path"}.
"""
import json
import re
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT = int(sys.argv[1])
LOG_PATH = sys.argv[2]
_lock = threading.Lock()
_counter = 0

AZURE = re.compile(r"^/openai/deployments/([^/]+)/chat/completions$")


def usage_for(messages):
    chars = 0
    for m in messages:
        c = m.get("content", "")
        if isinstance(c, list):
            c = "".join(p.get("text", "") for p in c if isinstance(p, dict))
        chars += len(str(c))
    prompt = 7 + chars // 4
    completion = 5 + (prompt * 3) % 41
    return prompt, completion


def record(entry):
    with _lock:
        with open(LOG_PATH, "a") as f:
            f.write(json.dumps(entry, sort_keys=True) + "\n")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _send(self, code, obj):
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt, *args):
        sys.stderr.write("stub: " + (fmt % args) + "\n")

    def do_GET(self):
        if self.path.split("?")[0] == "/health":
            self._send(200, {"status": "ok"})
        else:
            self._send(404, {"error": {"message": "not found", "type": "invalid_request_error"}})

    def do_POST(self):
        global _counter
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        path = self.path.split("?")[0].rstrip("/")
        if path.startswith("/api/public/"):
            # Langfuse ingestion: accept every event.
            record({"kind": "langfuse", "path": path})
            self._send(207, {"successes": [], "errors": []})
            return
        azure = AZURE.match(path)
        if not (azure or path.endswith("/chat/completions")):
            self._send(404, {"error": {"message": f"no route {path}", "type": "invalid_request_error"}})
            return
        try:
            req = json.loads(raw or b"{}")
        except json.JSONDecodeError:
            self._send(400, {"error": {"message": "bad json", "type": "invalid_request_error"}})
            return
        # Azure names the deployment in the path; the others name the model in the body.
        model = azure.group(1) if azure else req.get("model")
        prompt, completion = usage_for(req.get("messages") or [])
        with _lock:
            _counter += 1
            n = _counter
        record({
            "kind": "chat",
            "path": path,
            "query": self.path.partition("?")[2],
            "model": model,
            "authorization": self.headers.get("Authorization") or self.headers.get("api-key"),
            "prompt_tokens": prompt,
            "completion_tokens": completion,
        })
        if req.get("stream"):
            self._send(400, {"error": {"message": "the stub does not stream", "type": "invalid_request_error"}})
            return
        self._send(200, {
            "id": f"chatcmpl-stub-{n:05d}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model or "unknown",
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": " ".join(["ok"] * completion)},
                "finish_reason": "stop",
                "logprobs": None,
            }],
            "usage": {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
            },
        })


if __name__ == "__main__":
    server = ThreadingHTTPServer(("127.0.0.1", PORT), Handler)
    print(f"stub listening on 127.0.0.1:{PORT}", flush=True)
    server.serve_forever()
