#!/usr/bin/env python3
"""Concurrent chat clients against a running `heavykv serve`: aggregate tokens/s and inter-token latency.

    python3 scripts/bench_server.py --port 8080 --clients 1 8 32 --tokens 16 [--kv h2o:20%]

Each client sends one streamed /v1/chat/completions request (greedy, max_tokens = --tokens, with
stream_options.include_usage so the server's own token count is used; a reply may end early at the
end-of-turn token) and records when each SSE event with content arrives. Reported per client count: wall time
from the first send to the last event, generated tokens, aggregate tokens/s, time to first token (p50),
inter-token gaps p50/p99 over all streams, failed requests, and from the server's /metrics how many sequences
its decode calls held on average and at most during the run (batching). All clients start together; run the
server with --parallel (or --kv-memory) and --queue large enough for the biggest count. Standard library only.
"""
import argparse, json, socket, threading, time


def http_get(port, path):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"GET %s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n" % path.encode())
    buf = b""
    while True:
        c = s.recv(65536)
        if not c:
            break
        buf += c
    s.close()
    return buf.decode("utf-8", "replace")


def metrics(port):
    """The server's counters of interest (0 when absent)."""
    out = {}
    for line in http_get(port, "/metrics").splitlines():
        for name in ("heavykv_batch_sequences_sum", "heavykv_batch_sequences_count", "heavykv_batch_sequences_max",
                     "heavykv_generated_tokens_total"):
            if line.startswith(name + " "):
                out[name] = float(line.split()[1])
    return out


def stream_chat(port, body, out):
    s = socket.create_connection(("127.0.0.1", port))
    data = json.dumps(body).encode()
    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
              b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(data) + data)
    t0 = time.monotonic()
    times, buf, raw, n_tok, status = [], b"", b"", None, 0
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        now = time.monotonic()
        raw += chunk
        if not status and b"\r\n" in raw:
            status = int(raw.split(b" ", 2)[1])
        buf += chunk
        while b"\n\n" in buf:
            ev, buf = buf.split(b"\n\n", 1)
            i = ev.find(b"data: ")
            if i < 0 or ev[i + 6:].startswith(b"[DONE]"):
                continue
            try:
                j = json.loads(ev[i + 6:].split(b"\r\n")[0])
            except ValueError:
                continue
            if j.get("usage"):
                n_tok = j["usage"].get("completion_tokens")
            c = j.get("choices") or [{}]
            if (c[0].get("delta") or {}).get("content"):
                times.append(now)
    s.close()
    out.append((t0, times, n_tok if n_tok is not None else len(times), status))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--tokens", type=int, default=16)
    ap.add_argument("--kv", default="", help="per-request KV config POLICY:BUDGET, e.g. h2o:20%%")
    a = ap.parse_args()
    label = a.kv or "server default"
    for n in a.clients:
        res, th = [], []
        for k in range(n):
            body = {"messages": [{"role": "user", "content": f"Tell me story number {k} about a cat."}],
                    "max_tokens": a.tokens, "temperature": 0, "stream": True,
                    "stream_options": {"include_usage": True}}
            if a.kv:
                pol, bud = a.kv.split(":")
                body["kv"] = {"policy": pol, "budget": bud}
            th.append(threading.Thread(target=stream_chat, args=(a.port, body, res)))
        m0 = metrics(a.port)
        t_start = time.monotonic()
        for t in th:
            t.start()
        for t in th:
            t.join()
        m1 = metrics(a.port)
        t_end = max([ts[-1] for _, ts, _, _ in res if ts] or [time.monotonic()])
        tokens = sum(nt for _, _, nt, _ in res)
        failed = sum(1 for _, _, _, st in res if st != 200)
        gaps = sorted(b - a_ for _, ts, _, _ in res for a_, b in zip(ts, ts[1:]))
        ttft = sorted(ts[0] - t0 for t0, ts, _, _ in res if ts)
        pct = lambda v, p: v[min(len(v) - 1, int(p * len(v)))] if v else float("nan")
        calls = m1.get("heavykv_batch_sequences_count", 0) - m0.get("heavykv_batch_sequences_count", 0)
        seqs = m1.get("heavykv_batch_sequences_sum", 0) - m0.get("heavykv_batch_sequences_sum", 0)
        print(f"[{label}] clients {n:3d}: {tokens} tokens in {t_end - t_start:.2f} s = {tokens / (t_end - t_start):.2f} tok/s; "
              f"TTFT p50 {pct(ttft, 0.5) * 1e3:.0f} ms; inter-token p50 {pct(gaps, 0.5) * 1e3:.0f} ms, "
              f"p99 {pct(gaps, 0.99) * 1e3:.0f} ms; failed {failed}; decode calls {calls:.0f}, "
              f"{seqs / calls if calls else 0:.1f} sequences per call (max so far {m1.get('heavykv_batch_sequences_max', 0):.0f})",
              flush=True)


if __name__ == "__main__":
    main()
