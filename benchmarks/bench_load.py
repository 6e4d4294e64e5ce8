"""Load test of the app: concurrent clients against its public API, with the tiny profile. Prints one JSON object.

    python benchmarks/bench_load.py                       # 20 clients, 200 sessions, 30 s session TTL
    python benchmarks/bench_load.py --clients 4 --sessions 8 --ttl 5      # a quick look

The app runs in a subprocess exactly as `python app.py` runs it (its queue, its session capacity and TTL from
the environment). Each session is a fresh `gradio_client.Client` (its own session hash) that calls `/restore` once
on a real group photo with one reference. A request is *served*, *busy* (refused with the app's queue-full line)
or an *error* (anything else, with its message). The server's RSS is sampled before the first request, during
the run (peak) and after every session has outlived its TTL.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psutil
from gradio_client import Client, handle_file


REPO = Path(__file__).resolve().parent.parent
TESTDATA = REPO.parent / "shared" / "testdata"
BUSY_WORDS = ("queue is full", "busy", "too many")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(port: int, ttl_s: float, queue_size: int) -> subprocess.Popen:
    env = {
        **os.environ, "MAGICID_PROFILE": "tiny", "MAGICID_SESSION_TTL": str(ttl_s), "MAGICID_QUEUE_SIZE": str(queue_size),
        "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port), "GRADIO_ANALYTICS_ENABLED": "False",
    }  # fmt: skip
    log = open(REPO / ".bench_load_server.log", "w")  # noqa: SIM115 - lives as long as the server
    return subprocess.Popen([sys.executable, "app.py"], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)


def wait_until_up(url: str, server: subprocess.Popen, timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the app exited with status {server.returncode}; see .bench_load_server.log")
        try:
            if httpx.get(url, timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise SystemExit("the app did not start in time")


class RssSampler(threading.Thread):
    """The server's resident memory, sampled every `period_s` (peak kept)."""

    def __init__(self, pid: int, period_s: float = 0.25):
        super().__init__(daemon=True)
        self.process, self.period_s, self.peak, self._done = psutil.Process(pid), period_s, 0, threading.Event()

    def rss(self) -> int:
        return self.process.memory_info().rss

    def run(self) -> None:
        while not self._done.is_set():
            self.peak = max(self.peak, self.rss())
            time.sleep(self.period_s)

    def stop(self) -> None:
        self._done.set()
        self.join()


def one_session(url: str, photo: Path, reference: Path, steps: int) -> tuple[str, float, str]:
    """(outcome, seconds, message) of one fresh client calling /restore once."""
    started = time.perf_counter()
    try:
        client = Client(url, verbose=False)
        client.predict(handle_file(str(photo)), [handle_file(str(reference))], 100, steps, 1.0, 0, api_name="/restore")
        return "served", time.perf_counter() - started, ""
    except Exception as error:  # noqa: BLE001 - every failure is classified and counted, none may stop the run
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        outcome = "busy" if any(word in message.lower() for word in BUSY_WORDS) else "error"
        return outcome, time.perf_counter() - started, message


def percentile(values: list[float], fraction: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(fraction * len(ordered)))], 2)


def run(args: argparse.Namespace) -> dict:
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    server = start_server(port, args.ttl, args.queue_size)
    try:
        wait_until_up(url, server)
        sampler = RssSampler(server.pid)
        one_session(url, args.photo, args.reference, args.steps)  # warm-up: models loaded, caches filled
        rss_before = sampler.rss()
        sampler.start()
        started = time.perf_counter()
        with ThreadPoolExecutor(args.clients) as pool:
            results = list(pool.map(lambda _: one_session(url, args.photo, args.reference, args.steps), range(args.sessions)))
        wall_s = time.perf_counter() - started
        sampler.stop()
        time.sleep(args.ttl + args.settle)
        rss_after = sampler.rss()
        still_up = httpx.get(url, timeout=30).status_code == 200
    finally:
        server.terminate()
        server.wait(timeout=60)
    served = [seconds for outcome, seconds, _ in results if outcome == "served"]
    errors = sorted({message for outcome, _, message in results if outcome == "error"})
    mib = 2**20
    return {
        "clients": args.clients, "sessions": args.sessions, "steps": args.steps, "ttl_s": args.ttl,
        "queue_size": args.queue_size, "served": len(served), "busy": sum(o == "busy" for o, _, _ in results),
        "errors": sum(o == "error" for o, _, _ in results), "error_messages": errors[:5],
        "latency_p50_s": percentile(served, 0.5), "latency_p95_s": percentile(served, 0.95),
        "mean_latency_s": round(statistics.fmean(served), 2) if served else None, "wall_s": round(wall_s, 1),
        "rss_before_mib": round(rss_before / mib), "rss_peak_mib": round(sampler.peak / mib),
        "rss_after_mib": round(rss_after / mib), "rss_after_minus_before_mib": round((rss_after - rss_before) / mib),
        "server_still_up": still_up, "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--sessions", type=int, default=200)
    parser.add_argument("--steps", type=int, default=2, help="DIIR steps per request (the tiny profile)")
    parser.add_argument("--ttl", type=float, default=30.0, help="MAGICID_SESSION_TTL of the server, seconds")
    parser.add_argument("--settle", type=float, default=15.0, help="seconds waited after the TTL before measuring")
    parser.add_argument("--queue-size", type=int, default=16)
    parser.add_argument("--photo", type=Path, default=TESTDATA / "group" / "voc_three_friends.jpg")
    parser.add_argument("--reference", type=Path, default=TESTDATA / "portraits" / "barack_obama" / "1.jpg")
    print(json.dumps(run(parser.parse_args()), indent=2))


if __name__ == "__main__":
    main()
