"""The explorer under load: ten users at once against the same ten users one after another.

Launches the app on the toy CLIP (127.0.0.1), warms its caches with one session, then runs
``--users`` sessions (each: open a head, search a concept, apply an edit, probe LUCID) first one
after another, then all at once through ``gradio_client``; any failed request stops the script
with its error. Prints per-request latencies and the wall-time ratio concurrent / sequential
(below 1: the queue overlaps work; 1: it only serialises).

    python benchmarks/demo_load.py [--users 10]          # the last line is JSON
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


def session(url: str, i: int, sample: str) -> list[float]:
    """One user's visit; returns the latency of each request (seconds)."""
    from gradio_client import Client

    client = Client(url, verbose=False)
    calls = [
        ((i % 6, i % 8), "/head_view"),
        (("red",), "/concept_search"),
        ((["red", "blue"], [], 2, 0.5, "-4:", "a red object, a blue object, a green object", None, "color"), "/edit_view"),
        ((None, sample, ["a red circle", "a blue square"][i % 2]), "/lucid_probe"),
    ]
    times = []
    for args, api in calls:
        start = time.perf_counter()
        client.predict(*args, api_name=api)
        times.append(time.perf_counter() - start)
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=10)
    args = parser.parse_args(argv)
    from sith_lens.demo import Workbench, launch
    from sith_lens.demo.lucid_views import sample_choices

    wb = Workbench("toy")
    demo = launch(wb, block=False, quiet=True)
    try:
        sample = sample_choices(wb)[0]
        session(demo.local_url, 0, sample)  # builds the explanations, the SAE labels, the edit
        start = time.perf_counter()
        sequential = [session(demo.local_url, i, sample) for i in range(args.users)]
        sequential_wall = time.perf_counter() - start
        start = time.perf_counter()
        with ThreadPoolExecutor(args.users) as pool:
            concurrent = list(pool.map(lambda i: session(demo.local_url, i, sample), range(args.users)))
        concurrent_wall = time.perf_counter() - start
    finally:
        demo.close()
    flat = lambda runs: sorted(t for run in runs for t in run)  # noqa: E731
    seq, con = flat(sequential), flat(concurrent)
    p95 = lambda xs: xs[min(len(xs) - 1, int(0.95 * len(xs)))]  # noqa: E731
    print(f"{args.users} users x 4 requests; sequential {sequential_wall:.1f} s, concurrent {concurrent_wall:.1f} s")
    print(f"latency sequential: median {statistics.median(seq) * 1000:.0f} ms, p95 {p95(seq) * 1000:.0f} ms")
    print(f"latency concurrent: median {statistics.median(con) * 1000:.0f} ms, p95 {p95(con) * 1000:.0f} ms")
    print(json.dumps({
        "users": args.users, "sequential_s": round(sequential_wall, 2), "concurrent_s": round(concurrent_wall, 2),
        "wall_ratio_concurrent_vs_sequential": round(concurrent_wall / sequential_wall, 3),
        "median_ms_sequential": round(statistics.median(seq) * 1000), "p95_ms_sequential": round(p95(seq) * 1000),
        "median_ms_concurrent": round(statistics.median(con) * 1000), "p95_ms_concurrent": round(p95(con) * 1000),
    }))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
