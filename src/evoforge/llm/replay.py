"""A scripted OpenAI-compatible server on 127.0.0.1, for tests and dry runs with no network.

It answers ``POST /v1/chat/completions`` from a script, one step per request, in arrival order; when
the script runs out it repeats ``default`` (or answers 503). A step is a dict:

- ``{"content": "...", "tokens": [in, out]}``: a normal reply (tokens default to a length estimate);
- ``{"status": 429, "retry_after": 0}``: an HTTP error (any status), optionally with Retry-After;
- ``{"delay": 5, "content": "..."}``: wait before answering (past the client's timeout: a hang);
- ``{"raw": "{not json"}``: a 200 whose body is not JSON.

Every request body is kept in ``requests`` (prompts included), so tests can read what was asked.
``python -m evoforge.llm.replay SCRIPT.json [--port N]`` serves a script file until interrupted.
"""

from __future__ import annotations

import contextlib
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


class ScriptedServer:
    def __init__(self, script: list[dict[str, Any]], default: dict[str, Any] | None = None, port: int = 0) -> None:
        self.script = list(script)
        self.default = default
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", 0))
                try:
                    body = json.loads(self.rfile.read(length) or b"{}")
                except json.JSONDecodeError:
                    body = {}
                step = server._next(body)
                # The client may have given up (a timeout): then the answer has nowhere to go.
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    server._answer(self, body, step)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.httpd.daemon_threads = True
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def _next(self, body: dict[str, Any]) -> dict[str, Any] | None:
        with self._lock:
            self.requests.append(body)
            return self.script.pop(0) if self.script else self.default

    @staticmethod
    def _answer(handler: BaseHTTPRequestHandler, body: dict[str, Any], step: dict[str, Any] | None) -> None:
        def send(status: int, payload: bytes, headers: dict[str, str] | None = None) -> None:
            handler.send_response(status)
            handler.send_header("content-type", "application/json")
            handler.send_header("content-length", str(len(payload)))
            for key, value in (headers or {}).items():
                handler.send_header(key, value)
            handler.end_headers()
            handler.wfile.write(payload)

        if step is None:
            send(503, json.dumps({"error": {"message": "the script has no more replies"}}).encode())
            return
        if step.get("delay"):
            time.sleep(float(step["delay"]))
        if "raw" in step:
            send(200, str(step["raw"]).encode())
            return
        status = int(step.get("status", 200))
        if status != 200:
            headers = {"retry-after": str(step["retry_after"])} if "retry_after" in step else {}
            send(status, json.dumps({"error": {"message": f"scripted {status}", "type": "scripted"}}).encode(),
                 headers)
            return
        content = str(step.get("content", ""))
        prompt_chars = sum(len(str(m.get("content", ""))) for m in body.get("messages", []))
        tokens_in, tokens_out = step.get("tokens", (prompt_chars // 4 + 1, len(content) // 4 + 1))
        send(200, json.dumps({
            "id": "chatcmpl-scripted", "object": "chat.completion", "created": int(time.time()),
            "model": body.get("model", "scripted"),
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": content}}],
            "usage": {"prompt_tokens": tokens_in, "completion_tokens": tokens_out,
                      "total_tokens": tokens_in + tokens_out},
        }).encode())

    def start(self) -> ScriptedServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> ScriptedServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("script", type=Path, help='JSON: {"script": [steps], "default": step} or a list of steps')
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args(argv)
    data = json.loads(args.script.read_text())
    script, default = (data, None) if isinstance(data, list) else (data.get("script", []), data.get("default"))
    server = ScriptedServer(script, default, args.port).start()
    print(f"serving {len(script)} scripted replies at {server.url}", file=sys.stderr)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
