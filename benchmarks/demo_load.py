"""The explorer under load: p50 and p95 request latency with 10 and 30 users at once, against the
same sessions one after another.

Starts `sith-lens demo` on the toy CLIP in its own process (127.0.0.1, a free port), warms its
caches with one session, then for each level runs ``N`` sessions (each: open a head, search a
concept, apply an edit, probe LUCID) one after another and then all at once through
``gradio_client`` (the clients run in this process, the server in its own). Any failed request
stops the script with its error. Target: p95 under 3 s at 10 users on the toy CLIP.

Two latencies per request: until the response arrives, and until every image it returns has been
downloaded too, six at a time as a browser does (gradio_client's own download fetches them one
after another, which measures the client more than the server).

    python benchmarks/demo_load.py [--users 10,30]          # the last line is JSON
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

ENDPOINTS = ("/head_view", "/concept_search", "/edit_view", "/lucid_probe")


def file_urls(value: object) -> list[str]:
    """Every file URL in a response (gallery items, images, downloads)."""
    if isinstance(value, dict):
        url = value.get("url")
        found = [url] if isinstance(url, str) and url.startswith("http") else []
        return found + [u for v in value.values() if isinstance(v, (dict, list, tuple)) for u in file_urls(v)]
    if isinstance(value, (list, tuple)):
        return [u for v in value for u in file_urls(v)]
    return []


def session(url: str, i: int, sample: str, download: bool = True) -> dict[str, float]:
    """One user's visit; returns the latency of each request (seconds) by endpoint, including the
    download of the images it returns (six at a time, as a browser) when ``download``."""
    import httpx
    from gradio_client import Client

    client = Client(url, verbose=False, download_files=False)
    http = httpx.Client(timeout=120, limits=httpx.Limits(max_connections=6))
    pool = ThreadPoolExecutor(6)
    calls = [
        ((i % 6, i % 8), "/head_view"),
        (("red",), "/concept_search"),
        ((["red", "blue"], [], 2, 0.5, "-4:", "a red object, a blue object, a green object", None, "color"), "/edit_view"),
        ((None, sample, ["a red circle", "a blue square"][i % 2]), "/lucid_probe"),
    ]
    times = {}
    try:
        for args, api in calls:
            start = time.perf_counter()
            result = client.predict(*args, api_name=api)
            if download:
                for response in pool.map(http.get, file_urls(result)):
                    response.raise_for_status()
            times[api] = time.perf_counter() - start
    finally:
        pool.shutdown()
        http.close()
    return times


def percentile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(port: int) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "sith_lens.cli", "demo", "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    import urllib.request

    for _ in range(240):
        if proc.poll() is not None:
            raise SystemExit(f"the demo server exited with status {proc.returncode}")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2)
            return proc
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise SystemExit("the demo server did not answer within 120 s")


def run_level(url: str, users: int, sample: str) -> dict[str, float]:
    start = time.perf_counter()
    sequential = [session(url, i, sample) for i in range(users)]
    sequential_wall = time.perf_counter() - start
    row: dict[str, float] = {"users": users, "sequential_s": round(sequential_wall, 2)}
    seq = [t for run in sequential for t in run.values()]
    row.update(p50_ms_alone=round(statistics.median(seq) * 1000), p95_ms_alone=round(percentile(seq, 0.95) * 1000))
    for download, suffix in ((False, "response"), (True, "with_images")):
        start = time.perf_counter()
        with ThreadPoolExecutor(users) as pool:
            concurrent = list(pool.map(lambda i: session(url, i, sample, download), range(users)))
        wall = time.perf_counter() - start
        con = [t for run in concurrent for t in run.values()]
        row[f"concurrent_s_{suffix}"] = round(wall, 2)
        row[f"p50_ms_{suffix}"] = round(statistics.median(con) * 1000)
        row[f"p95_ms_{suffix}"] = round(percentile(con, 0.95) * 1000)
        by_request = {api[1:]: round(percentile([run[api] for run in concurrent], 0.95) * 1000) for api in ENDPOINTS}
        row[f"p95_ms_by_request_{suffix}"] = by_request
        print(f"{users} users at once, {suffix.replace('_', ' ')}: {wall:.1f} s, p50 {row[f'p50_ms_{suffix}']} ms, "
              f"p95 {row[f'p95_ms_{suffix}']} ms ({', '.join(f'{k} {v}' for k, v in by_request.items())} ms)")
    print(f"{users} users one after another (with images): {sequential_wall:.1f} s, p50 {row['p50_ms_alone']} ms, "
          f"p95 {row['p95_ms_alone']} ms")
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", default="10,30", help="comma-separated numbers of simultaneous users")
    args = parser.parse_args(argv)
    levels = [int(x) for x in args.users.split(",")]
    from sith_lens.demo import Workbench
    from sith_lens.demo.lucid_views import sample_choices

    sample = sample_choices(Workbench("toy"))[0]
    port = free_port()
    server = start_server(port)
    url = f"http://127.0.0.1:{port}/"
    try:
        start = time.perf_counter()
        session(url, 0, sample)  # builds the explanations, the SAE labels, the edit
        print(f"first session (builds everything): {time.perf_counter() - start:.1f} s")
        rows = [run_level(url, users, sample) for users in levels]
    finally:
        server.terminate()
        server.wait(timeout=30)
    target = next((r for r in rows if r["users"] == 10), None)
    print(json.dumps({"levels": rows, "cpu_count": os.cpu_count(), "target_p95_ms_at_10": 3000,
                      "p95_ms_at_10_users_response": target["p95_ms_response"] if target else None,
                      "p95_ms_at_10_users_with_images": target["p95_ms_with_images"] if target else None}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
