"""The HTTP server under hostile uploads, slow clients and load, on loopback
(docs/inference.md: Reliability; results in benchmarks/RESULTS.md).

    python benchmarks/serve_load.py --model random:micro --clients 24 --requests 3 --max-queue 4

Starts `python -m whisper_ft serve` as its own process, then:
1. hostile uploads, each sent once (decode bombs six at once), with the status each got;
2. slow clients: `--slow-clients` connections trickling their headers a byte per second,
   while /health is asked every 0.5 s; how long until the server has closed them all;
3. load: `--clients` threads each sending `--requests` 1-s uploads; a 503 is retried after
   its Retry-After (at most 2 s): requests answered per second, p50/p99 latency of the 200s,
   how many 503s;
4. recovery: /health and one more upload after the load.
The server's peak memory (VmHWM, Linux) is read after each phase. Prints one line per figure
and, last, all of them as one JSON line (tests/serving/test_serve.py reads it).
"""

import argparse
import http.client
import io
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]


def audio(wave: np.ndarray, rate: int, format: str = "WAV", subtype: str = "PCM_16") -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, wave, rate, format=format, subtype=subtype)
    return buffer.getvalue()


def noise(seconds: float, rate: int = 16000, channels: int = 1, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (0.1 * rng.standard_normal((round(seconds * rate), channels))).astype(np.float32)


def hostile_uploads() -> list[tuple[str, bytes, int]]:
    """(name, file, copies sent at once) of each hostile upload."""
    non_finite = noise(1.0)
    non_finite[8000] = np.nan
    return [
        ("FLAC 30 s, 8 ch, 655,350 Hz (the bomb)", audio(np.zeros((655350 * 30, 8), np.int16),
                                                         655350, "FLAC"), 6),
        ("FLAC 30 s, 8 ch, 192 kHz (widest admitted)", audio(np.zeros((192000 * 30, 8),
                                                            np.int16), 192000, "FLAC"), 6),
        ("WAV 16 ch", audio(noise(0.5, channels=16), 16000), 1),
        ("WAV at 2**31-1 Hz", audio(np.zeros((100, 1)), 2**31 - 1), 1),
        ("WAV GSM 6.10 (not seekable)", audio(noise(2.0, 8000), 8000, subtype="GSM610"), 1),
        ("WAV float with a NaN", audio(non_finite, 16000, subtype="FLOAT"), 1),
        ("FLAC 40 s", audio(noise(40), 16000, "FLAC"), 1),
        ("not audio", b"this is not audio " * 64, 1),
        ("empty", b"", 1),
        ("25 MB", b"\0" * 25_000_000, 1),
    ]  # fmt: skip


def post(port: int, filename: str, data: bytes, timeout_s: float = 600) -> tuple[int, dict, dict]:
    """(status, JSON body, headers) of one multipart upload; status 0: no answer."""
    boundary = "serve-load-boundary"
    head = (
        f"--{boundary}\r\nContent-Disposition: form-data; "
        f'name="file"; filename="{filename}"\r\nContent-Type: application/octet-stream\r\n\r\n'
    )
    body = head.encode() + data + f"\r\n--{boundary}--\r\n".encode()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)
    try:
        conn.request(
            "POST",
            "/transcribe",
            body,
            {"Content-Type": f"multipart/form-data; boundary={boundary}"},
        )
        response = conn.getresponse()
        text = response.read()
        try:
            answer = json.loads(text)
        except json.JSONDecodeError:  # uvicorn's own 503 (connection limit) is plain text
            answer = {"detail": text.decode(errors="replace")}
        return response.status, answer, dict(response.getheaders())
    except OSError:  # reset mid-body (a refusal sent, the socket closed) or timed out
        return 0, {}, {}
    finally:
        conn.close()


def health(port: int) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/health")
        response = conn.getresponse()
        response.read()
        return response.status
    except OSError:
        return 0
    finally:
        conn.close()


def peak_mb(pid: int, field: str = "VmHWM") -> float:
    """A /proc/PID/status memory field (VmHWM: peak resident memory) in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/{pid}/status")


def run_all(uploads: list[tuple[str, bytes, int]], port: int) -> dict[str, list[int]]:
    """Each upload's `copies` sent at once; the statuses by upload name."""
    results: dict[str, list[int]] = {}
    for name, data, copies in uploads:
        codes: list[int] = []
        threads = [
            threading.Thread(target=lambda d=data, c=codes: c.append(post(port, "up", d)[0]))
            for _ in range(copies)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        results[name] = sorted(codes)
    return results


def slow_clients(port: int, n: int, limit_s: float) -> dict:
    """`n` connections sending a header byte per second; /health asked every 0.5 s."""
    line = b"POST /transcribe HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data\r\n"
    socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(n)]
    open_socks, health_codes, started = set(socks), [], time.monotonic()
    i = 0
    while open_socks and time.monotonic() - started < limit_s:
        for sock in list(open_socks):
            try:
                sock.sendall(line[i % len(line) : i % len(line) + 1])
                sock.setblocking(False)
                if sock.recv(4096) == b"":
                    open_socks.discard(sock)
            except (BlockingIOError, InterruptedError):
                pass
            except OSError:  # reset or broken pipe: closed by the server
                open_socks.discard(sock)
            finally:
                sock.setblocking(True)
        health_codes.append(health(port))
        i += 1
        time.sleep(0.5)
    elapsed = time.monotonic() - started
    for sock in socks:
        sock.close()
    return {
        "slow_clients": n,
        "slow_clients_closed": n - len(open_socks),
        "slow_clients_closed_after_s": round(elapsed, 1),
        "health_during": sorted(set(health_codes)),
        "health_after": health(port),
    }


def load(port: int, clients: int, requests: int) -> dict:
    """`clients` threads each sending `requests` uploads, retrying 503s after Retry-After."""
    latencies: list[float] = []
    codes: list[int] = []
    lock = threading.Lock()

    def client(k: int) -> None:
        for r in range(requests):
            data = audio(noise(1.0, seed=k * requests + r), 16000)
            while True:
                sent = time.perf_counter()
                status, _, headers = post(port, f"{k}-{r}.wav", data)
                with lock:
                    codes.append(status)
                    if status == 200:
                        latencies.append(time.perf_counter() - sent)
                if status != 503:
                    break
                time.sleep(min(float(headers.get("retry-after", 1)), 2.0))

    started = time.perf_counter()
    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall_s = time.perf_counter() - started
    latencies.sort()
    return {
        "clients": clients,
        "requests": clients * requests,
        "answered_200": codes.count(200),
        "answered_503": codes.count(503),
        "other_statuses": sorted(c for c in codes if c not in (200, 503)),
        "wall_s": round(wall_s, 1),
        "requests_per_s": round(codes.count(200) / wall_s, 2),
        "p50_s": round(statistics.median(latencies), 2) if latencies else None,
        "p99_s": round(latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))], 2)
        if latencies
        else None,
    }


def report(figures: dict, **new: object) -> None:
    """Add `new` to `figures` and print it at once (a phase can take minutes on a busy CPU)."""
    for key, value in new.items():
        print(f"{key}: {value}", flush=True)
    figures |= new


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="random:micro")
    parser.add_argument("--clients", type=int, default=24)
    parser.add_argument("--requests", type=int, default=3, help="uploads per client")
    parser.add_argument("--max-queue", type=int, default=4, help="the server's --max-queue")
    parser.add_argument("--max-batch", type=int, default=8, help="the server's --max-batch")
    parser.add_argument("--slow-clients", type=int, default=100)
    parser.add_argument("--request-timeout-s", type=float, default=3.0)
    parser.add_argument("--skip-hostile", action="store_true", help="load and recovery only")
    args = parser.parse_args()

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [sys.executable, "-m", "whisper_ft", "serve", "--model", args.model]
    command += ["--device", "cpu", "--port", str(port), "--max-queue", str(args.max_queue)]
    command += ["--max-batch", str(args.max_batch)]
    command += ["--request-timeout-s", str(args.request_timeout_s)]
    log = tempfile.TemporaryFile()
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
    figures: dict = {}
    report(figures, server=" ".join(command[1:]))
    try:
        deadline = time.monotonic() + 600  # minutes on a busy CPU
        while health(port) != 200:
            if server.poll() is not None or time.monotonic() > deadline:
                log.seek(0)
                sys.exit(f"the server did not start:\n{log.read().decode()}")
            time.sleep(0.2)
        post(port, "warm.wav", audio(noise(1.0), 16000))
        report(figures, rss_idle_mb=round(peak_mb(server.pid, "VmRSS")))
        if not args.skip_hostile:
            report(figures, hostile=run_all(hostile_uploads(), port))
            report(figures, peak_mb_after_hostile=round(peak_mb(server.pid)))
            limit_s = 4 * args.request_timeout_s + 10
            report(figures, **slow_clients(port, args.slow_clients, limit_s))
        report(figures, **load(port, args.clients, args.requests))
        report(figures, peak_mb_after_load=round(peak_mb(server.pid)))
        status, answer, _ = post(port, "after.wav", audio(noise(1.0, seed=99), 16000))
        report(figures, recovery={"health": health(port), "transcribe": status})
        report(figures, rss_end_mb=round(peak_mb(server.pid, "VmRSS")))
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(30)
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
