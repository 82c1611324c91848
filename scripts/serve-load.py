#!/usr/bin/env python3
"""Load check of `loupe serve`: N concurrent streaming clients, and the server's speed at
one client against `loupe run`'s on the same model and threads.

    scripts/serve-load.py MODEL [--parallel 4] [--clients 1,4,16] [--tokens 64] [-t 2]

Starts `loupe serve` (target/release/loupe), then for each N: N clients at once, each
streaming a greedy chat completion of its own question with a fixed number of tokens
(`ignore_eos`). Reports requests completed, answers lost or mixed up (each answer is
compared with the same question asked alone first), total and per-client tokens/s, time to
first token, and the server's memory (VmHWM). Standard library only.
"""

import argparse
import http.client
import json
import os
import re
import statistics
import subprocess
import sys
import threading
import time

ap = argparse.ArgumentParser()
ap.add_argument("model")
ap.add_argument("--parallel", type=int, default=4)
ap.add_argument("--clients", default="1,4,16")
ap.add_argument("--tokens", type=int, default=64)
ap.add_argument("-t", "--threads", type=int, default=2)
ap.add_argument("--ctx", type=int, default=1024)
ap.add_argument("--loupe", default="target/release/loupe")
args = ap.parse_args()

QUESTIONS = [f"In one sentence, what is the number {i} known for?" for i in range(16)]

server = subprocess.Popen(
    [args.loupe, "serve", args.model, "--port", "0", "--parallel", str(args.parallel),
     "--ctx", str(args.ctx), "-t", str(args.threads)],
    stderr=subprocess.PIPE, text=True)
port = None
for line in server.stderr:
    m = re.search(r"listening on http://[^:]+:(\d+)", line)
    if m:
        port = int(m.group(1))
        break
if port is None:
    sys.exit("the server did not start")
threading.Thread(target=lambda: [None for _ in server.stderr], daemon=True).start()


def stream(question, out):
    """One streamed greedy chat completion; fills out with times and text."""
    body = json.dumps({
        "messages": [{"role": "user", "content": question}],
        "max_tokens": args.tokens, "temperature": 0, "ignore_eos": True, "stream": True,
        "stream_options": {"include_usage": True},
    })
    t0 = time.monotonic()
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    c.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
    r = c.getresponse()
    text, first, last, n, done, tokens = "", None, None, 0, False, 0
    for raw in r:
        line = raw.decode().strip()
        if not line.startswith("data: "):
            continue
        data = line[6:]
        if data == "[DONE]":
            done = True
            break
        chunk = json.loads(data)
        if "error" in chunk:
            break
        if chunk.get("usage"):
            tokens = chunk["usage"]["completion_tokens"]
        for ch in chunk["choices"]:
            piece = ch["delta"].get("content")
            if piece:
                now = time.monotonic()
                first = first or now
                last = now
                n += 1
                text += piece
    c.close()
    out.update(t0=t0, first=first, last=last, chunks=n, tokens=tokens, text=text, done=done)


def vm(field):
    with open(f"/proc/{server.pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return 0.0


# The answer each question gets alone: the reference for "lost or mixed up".
alone = {}
for q in QUESTIONS:
    o = {}
    stream(q, o)
    alone[q] = o["text"]
one_client = None
print(f"loupe serve {os.path.basename(args.model)}, --parallel {args.parallel}, "
      f"-t {args.threads}, {args.tokens} tokens per request (ignore_eos), greedy")
print("| clients | completed | differ from alone | total tok/s | per client tok/s (median) "
      "| TTFT median / max (s) | server RSS peak (MiB) |")
print("|---|---|---|---|---|---|---|")
for n in [int(x) for x in args.clients.split(",")]:
    outs = [{} for _ in range(n)]
    qs = [QUESTIONS[i % len(QUESTIONS)] for i in range(n)]
    threads = [threading.Thread(target=stream, args=(qs[i], outs[i])) for i in range(n)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - t0
    completed = sum(1 for o in outs if o["done"])
    differ = sum(1 for q, o in zip(qs, outs) if o["text"] != alone[q])
    total = sum(o["tokens"] for o in outs)
    # Tokens after the first, over the time from the first to the last.
    per = [(o["tokens"] - 1) / (o["last"] - o["first"]) for o in outs
           if o["first"] and o["last"] > o["first"]]
    ttft = [o["first"] - o["t0"] for o in outs if o["first"]]
    if n == 1:
        one_client = per[0]
    print(f"| {n} | {completed}/{n} | {differ} | {total / wall:.2f} | {statistics.median(per):.2f} "
          f"| {statistics.median(ttft):.2f} / {max(ttft):.2f} | {vm('VmHWM'):.0f} |")
server.terminate()
server.wait()

# `loupe run`, same model, threads and token count: its generation speed.
run = subprocess.run(
    [args.loupe, "run", args.model, "-p", QUESTIONS[0], "-n", str(args.tokens), "--ignore-eos",
     "--temp", "0", "--json", "-t", str(args.threads), "--ctx", str(args.ctx)],
    capture_output=True, text=True, check=True)
run_tps = json.loads(run.stdout)["timings"]["generate_tok_per_s"]
if one_client:
    print(f"\nloupe run: {run_tps:.2f} tok/s; serve at 1 client: {one_client:.2f} tok/s "
          f"({one_client / run_tps:.3f}x)")
