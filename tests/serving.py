"""The app served in-process on 127.0.0.1 for tests that talk to it over HTTP (browser, API clients, raw requests)."""

from __future__ import annotations

import json
import socket
import uuid

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve(demo, queue_size: int = 4, **launch_overrides) -> str:
    """Launch `demo` without blocking, with the production launch options; returns its URL."""
    from app import Settings, launch_options

    demo.queue(max_size=queue_size, default_concurrency_limit=1)
    options = {**launch_options(Settings()), **launch_overrides}
    _, url, _ = demo.launch(
        prevent_thread_lock=True, server_name="127.0.0.1", server_port=free_port(), quiet=True, ssr_mode=False, **options
    )
    return url


def call_event(url: str, fn_index: int, data: list, timeout: float = 120.0) -> str:
    """Everything the server streams back for one raw queue request to event `fn_index` (as the web page sends it,
    bypassing the client libraries' api_visibility checks): the concatenated SSE `data:` payloads."""
    session = uuid.uuid4().hex
    base = url.rstrip("/") + "/gradio_api"
    with httpx.Client(timeout=timeout) as client:
        joined = client.post(f"{base}/queue/join", json={
            "data": data, "fn_index": fn_index, "session_hash": session, "event_data": None, "trigger_id": None,
        })  # fmt: skip
        if joined.status_code != 200:
            return joined.text
        messages = []
        with client.stream("GET", f"{base}/queue/data", params={"session_hash": session}) as response:
            for line in response.iter_lines():
                if not line.startswith("data:"):
                    continue
                messages.append(line[5:])
                if json.loads(line[5:]).get("msg") in ("process_completed", "close_stream", "unexpected_error"):
                    break
        return "\n".join(messages)
