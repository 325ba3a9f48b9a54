"""Soak: a long run through uvicorn with full telemetry must not leak memory, fds or threads.

One uvicorn process serves the instrumented app of the reliability tests (traces
over OTLP/gRPC to a receiver in its own process, metrics, JSON logs); this driver
sends ``--requests`` requests from a few threads and, every ``--sample-every``
requests after the warm-up, reads the server's RSS, open file descriptors and
thread count from ``/proc``. It prints the RSS slope (least squares, KiB per
10,000 requests) and the fd and thread counts, and exits 1 when the slope is above
``--max-rss-slope`` or the fd or thread count grew after the warm-up.

    python benchmarks/soak.py [--requests 200000] [--threads 4] [--max-rss-slope 256]

Linux only (``/proc``). ``nox -s soak`` runs it with the defaults.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.reliability._support import FASTAPI_APP, Server, clean_env, free_port  # noqa: E402

__all__ = ["main"]

# The receiver counts the spans and forgets them, so its own memory stays flat
# over hundreds of thousands of spans; it prints the total when stdin closes.
_RECEIVER = """
import sys, threading
from tests.receivers import OTLPReceiver

receiver = OTLPReceiver("grpc")
receiver.start()
print(receiver.port, flush=True)
total = 0
done = threading.Event()
threading.Thread(target=lambda: (sys.stdin.read(), done.set()), daemon=True).start()
while True:
    finished = done.wait(0.5)
    with receiver._sink.cond:
        total += len(receiver._sink.items)
        receiver._sink.items.clear()
        receiver._sink.metadata.clear()
    if finished:
        break
receiver.stop()
print(total, flush=True)
"""


def _proc_figures(pid: int) -> tuple[int, int, int]:
    """Return the RSS (KiB), open fd count and thread count of process ``pid``."""
    rss = threads = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1])
        elif line.startswith("Threads:"):
            threads = int(line.split()[1])
    return rss, len(os.listdir(f"/proc/{pid}/fd")), threads


def _slope(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Least-squares slope of ys over xs (0 with fewer than two points)."""
    if len(xs) < 2:
        return 0.0
    mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
    var = sum((x - mean_x) ** 2 for x in xs)
    cov = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True))
    return cov / var if var else 0.0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the soak and return the exit status (0: no growth beyond the bounds)."""
    import httpx

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200_000)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--sample-every", type=int, default=2_000)
    parser.add_argument("--warmup", type=int, default=10_000)
    parser.add_argument(
        "--max-rss-slope", type=float, default=256.0, help="KiB per 10,000 requests"
    )
    parser.add_argument("--fd-slack", type=int, default=4)
    parser.add_argument("--thread-slack", type=int, default=1)
    args = parser.parse_args(argv)
    warmup = min(args.warmup, args.requests // 4)

    with tempfile.TemporaryDirectory() as tmp:
        project = Path(tmp)
        (project / "app.py").write_text(FASTAPI_APP)
        receiver = subprocess.Popen(
            [sys.executable, "-c", _RECEIVER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=clean_env(),
        )
        assert receiver.stdout is not None
        assert receiver.stdin is not None
        collector = f"http://127.0.0.1:{receiver.stdout.readline().strip()}"
        port = free_port()
        env = clean_env(
            OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=collector, OTEL_EXPORTER_OTLP_PROTOCOL="grpc"
        )
        command = [sys.executable, "-m", "uvicorn", "app:app", "--port", str(port)]
        command += ["--host", "127.0.0.1", "--no-access-log", "--log-level", "warning"]
        server = Server(command, project, env, port)
        samples: list[tuple[int, int, int, int]] = []
        began = time.monotonic()
        try:
            server.start()
            sent = failed = 0
            with (
                httpx.Client(base_url=server.url, timeout=10) as client,
                ThreadPoolExecutor(args.threads) as pool,
            ):

                def call(i: int) -> bool:
                    try:
                        return client.get(f"/items/{i}").status_code == 200
                    except httpx.HTTPError:
                        return False

                while sent < args.requests:
                    chunk = min(args.sample_every, args.requests - sent)
                    failed += sum(not ok for ok in pool.map(call, range(sent, sent + chunk)))
                    sent += chunk
                    if sent >= warmup:
                        samples.append((sent, *_proc_figures(server.pid)))
            elapsed = time.monotonic() - began
        finally:
            server.terminate(timeout=60)
            receiver.stdin.close()
            spans = receiver.stdout.readline().strip()
            receiver.wait(30)

    xs = [float(s[0]) for s in samples]
    slope = _slope(xs, [float(s[1]) for s in samples]) * 10_000
    first, last = samples[0], samples[-1]
    print(
        f"soak: {sent} requests in {elapsed:.0f} s ({sent / elapsed:.0f}/s), {failed} failed, "
        f"{spans} spans received"
    )
    print(
        f"soak: RSS {first[1]} KiB -> {last[1]} KiB after warm-up ({warmup} requests), "
        f"slope {slope:.1f} KiB per 10k requests (bound {args.max_rss_slope:g})"
    )
    print(f"soak: fds {first[2]} -> {last[2]}, threads {first[3]} -> {last[3]}")
    problems = []
    if failed:
        problems.append(f"{failed} requests failed")
    if slope > args.max_rss_slope:
        problems.append("RSS grows")
    if max(s[2] for s in samples) > first[2] + args.fd_slack:
        problems.append("open fds grow")
    if max(s[3] for s in samples) > first[3] + args.thread_slack:
        problems.append("threads grow")
    if problems:
        print("soak: FAIL: " + ", ".join(problems))
        return 1
    print("soak: OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
