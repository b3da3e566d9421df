#!/usr/bin/env python3
"""Concurrent chat clients against a running `heavykv serve`: aggregate tokens/s and inter-token latency.

    python3 scripts/bench_server.py --port 8080 --clients 1 8 32 --tokens 16 [--kv h2o:20%]

Each client sends one streamed /v1/chat/completions request (greedy, max_tokens = --tokens, ignoring nothing:
a reply may end early at the end-of-turn token) and records when each SSE event arrives. Reported per client
count: wall time from the first send to the last event, generated tokens, aggregate tokens/s, time to first
token (p50), and inter-token gaps p50/p99 over all streams. Standard library only.
"""
import argparse, json, socket, statistics, threading, time


def stream_chat(port, body, out):
    s = socket.create_connection(("127.0.0.1", port))
    data = json.dumps(body).encode()
    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
              b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(data) + data)
    t0 = time.monotonic()
    times, buf = [], b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        now = time.monotonic()
        buf += chunk
        while b"\n\n" in buf:
            ev, buf = buf.split(b"\n\n", 1)
            i = ev.find(b"data: ")
            if i < 0 or ev[i + 6:].startswith(b"[DONE]"):
                continue
            j = json.loads(ev[i + 6:].split(b"\r\n")[0])
            c = j.get("choices") or [{}]
            if (c[0].get("delta") or {}).get("content"):
                times.append(now)
    s.close()
    out.append((t0, times))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--tokens", type=int, default=16)
    ap.add_argument("--kv", default="", help="per-request KV config POLICY:BUDGET, e.g. h2o:20%%")
    a = ap.parse_args()
    for n in a.clients:
        res, th = [], []
        for k in range(n):
            body = {"messages": [{"role": "user", "content": f"Tell me story number {k} about a cat."}],
                    "max_tokens": a.tokens, "temperature": 0, "stream": True}
            if a.kv:
                pol, bud = a.kv.split(":")
                body["kv"] = {"policy": pol, "budget": bud}
            th.append(threading.Thread(target=stream_chat, args=(a.port, body, res)))
        t_start = time.monotonic()
        for t in th:
            t.start()
        for t in th:
            t.join()
        t_end = max([ts[-1] for _, ts in res if ts] or [time.monotonic()])
        tokens = sum(len(ts) for _, ts in res)
        gaps = sorted(b - a_ for _, ts in res for a_, b in zip(ts, ts[1:]))
        ttft = sorted(ts[0] - t0 for t0, ts in res if ts)
        pct = lambda v, p: v[min(len(v) - 1, int(p * len(v)))] if v else float("nan")
        print(f"clients {n:3d}: {tokens} tokens in {t_end - t_start:.2f} s = {tokens / (t_end - t_start):.2f} tok/s; "
              f"TTFT p50 {pct(ttft, 0.5) * 1e3:.0f} ms; inter-token p50 {pct(gaps, 0.5) * 1e3:.0f} ms, "
              f"p99 {pct(gaps, 0.99) * 1e3:.0f} ms", flush=True)


if __name__ == "__main__":
    main()
