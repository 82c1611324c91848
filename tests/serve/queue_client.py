"""A server with one slot and a queue of one (`--parallel 1 --queue 1`): the second request
waits for the first, the third is refused with a 503, and the two accepted ones both
finish, one after the other. Standard library only.

    python3 queue_client.py BASE_URL
"""

import http.client
import json
import sys
import threading
import time
import urllib.error
import urllib.request
from urllib.parse import urlparse

BASE = sys.argv[1]
HOST = urlparse(BASE).hostname
PORT = urlparse(BASE).port


def health():
    with urllib.request.urlopen(BASE + "/health", timeout=60) as r:
        return json.loads(r.read())


def stream(out):
    body = json.dumps({"prompt": "1, 2, 3,", "max_tokens": 40, "temperature": 0,
                       "ignore_eos": True, "stream": True,
                       "stream_options": {"include_usage": True}})
    c = http.client.HTTPConnection(HOST, PORT, timeout=300)
    c.request("POST", "/v1/completions", body, {"Content-Type": "application/json"})
    r = c.getresponse()
    out["status"] = r.status
    for raw in r:
        line = raw.decode().strip()
        if line.startswith("data: {"):
            chunk = json.loads(line[6:])
            out.setdefault("first", time.monotonic())
            out["last"] = time.monotonic()
            if chunk.get("usage"):
                out["tokens"] = chunk["usage"]["completion_tokens"]
    c.close()


def wait_for(cond, what):
    t0 = time.monotonic()
    while not cond(health()):
        if time.monotonic() - t0 > 60:
            raise AssertionError(f"timed out waiting for {what}: {health()}")
        time.sleep(0.02)


a, b = {}, {}
ta = threading.Thread(target=stream, args=(a,))
ta.start()
wait_for(lambda h: h["slots_processing"] == 1, "the first request to take the slot")
tb = threading.Thread(target=stream, args=(b,))
tb.start()
wait_for(lambda h: h["requests_queued"] == 1, "the second request to queue")
req = urllib.request.Request(BASE + "/v1/completions", method="POST",
                             data=json.dumps({"prompt": "x", "max_tokens": 1}).encode(),
                             headers={"Content-Type": "application/json"})
try:
    urllib.request.urlopen(req, timeout=60)
    raise AssertionError("a third request was accepted beyond the queue")
except urllib.error.HTTPError as e:
    err = json.loads(e.read())["error"]
    assert e.code == 503 and err["code"] == "server_busy", (e.code, err)
    print("ok   the request beyond the queue is a 503:", err["message"])
ta.join()
tb.join()
assert a["status"] == b["status"] == 200 and a.get("tokens") == b.get("tokens") == 40, (a, b)
assert b["first"] > a["last"], ("the queued request streamed before the first ended", a, b)
print("ok   the queued request ran after the first; both wrote 40 tokens")
wait_for(lambda h: h["slots_processing"] == 0 and h["requests_queued"] == 0, "an idle server")
print("all checks passed")
