"""The `openai` Python package against `loupe serve`, as a user's program would use it.

Run by tests/serve_openai.rs:  python3 openai_client.py BASE_URL API_KEY MODEL NEXT_JSON
(NEXT_JSON: `loupe next --json --top 5` of the same model for NEXT_PROMPT below).
Each check prints one line; the first failure raises, and the exit status says so.
"""

import json
import sys
import threading
import time
import urllib.error
import urllib.request

import openai

BASE, KEY, MODEL, NEXT_JSON = sys.argv[1:5]
NEXT_PROMPT = "The capital of France is"
client = openai.OpenAI(base_url=BASE + "/v1", api_key=KEY, max_retries=0, timeout=300)


def check(name, cond, detail=""):
    if not cond:
        raise AssertionError(f"{name}: {detail}")
    print(f"ok   {name}")


def raw(path, body=None, key=KEY, method=None, headers=None):
    """A request without the client (bodies it would never send); returns (status, JSON)."""
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    h = {"Content-Type": "application/json"}
    if key:
        h["Authorization"] = "Bearer " + key
    h.update(headers or {})
    req = urllib.request.Request(BASE + path, data=data, headers=h, method=method)
    try:
        with urllib.request.urlopen(req, timeout=300) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def health():
    return raw("/health", key=None)[1]


def chat(messages, **kw):
    return client.chat.completions.create(model=MODEL, messages=messages, **kw)


# --- a chat completion, whole and streamed: the same greedy text -------------------------
ask = [{"role": "user", "content": "Name three primary colors."}]
whole = chat(ask, max_tokens=24, temperature=0)
text = whole.choices[0].message.content
check("chat completion", whole.object == "chat.completion" and len(text) > 0
      and whole.choices[0].finish_reason in ("stop", "length")
      and whole.usage.completion_tokens > 0
      and whole.usage.total_tokens == whole.usage.prompt_tokens + whole.usage.completion_tokens,
      whole)
chunks = list(chat(ask, max_tokens=24, temperature=0, stream=True,
                   stream_options={"include_usage": True}))
streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
check("streamed chat = whole chat (greedy)", streamed == text, f"{streamed!r} vs {text!r}")
check("stream ends with a finish reason and usage", finish == [whole.choices[0].finish_reason]
      and chunks[-1].usage is not None
      and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens, chunks[-2:])
check("the resent conversation reuses the cache",
      chunks[-1].usage.prompt_tokens_details.cached_tokens > 0, chunks[-1].usage)

# --- stop strings: the text ends before the stop string, which is not sent ---------------
count = client.completions.create(model=MODEL, prompt="1, 2, 3, 4,", max_tokens=40,
                                  temperature=0, stop=[", 9"])
check("stop string", count.choices[0].finish_reason == "stop"
      and count.choices[0].text.endswith("8") and "9" not in count.choices[0].text,
      repr(count.choices[0].text))

# --- log-probabilities: the same distribution `loupe next` shows --------------------------
with open(NEXT_JSON) as f:
    nxt = json.load(f)["stages"][0]["top"]
comp = client.completions.create(model=MODEL, prompt=NEXT_PROMPT, max_tokens=1, temperature=0,
                                 logprobs=5)
lp = comp.choices[0].logprobs
served = lp.top_logprobs[0]
check("completion logprobs: five alternatives", len(served) == 5, served)
for cand in nxt:
    got = served.get(cand["piece"])
    want = __import__("math").log(cand["p"])
    check(f"logprob of {cand['piece']!r} = ln p of loupe next",
          got is not None and abs(got - want) < 1e-4, f"{got} vs {want}")
check("greedy token is the likeliest", lp.tokens[0] == nxt[0]["piece"]
      and abs(lp.token_logprobs[0] - __import__("math").log(nxt[0]["p"])) < 1e-4, lp)
cl = chat(ask, max_tokens=3, temperature=0, logprobs=True, top_logprobs=4).choices[0].logprobs
check("chat logprobs", len(cl.content) == 3 and all(len(t.top_logprobs) == 4 for t in cl.content)
      and all(t.token == t.top_logprobs[0].token and t.logprob == t.top_logprobs[0].logprob
              for t in cl.content), cl)

s, view = raw("/v1/next", {"prompt": NEXT_PROMPT, "top": 5, "top_k": 3})
check("/v1/next is loupe next's view", s == 200
      and [(c["id"], round(c["p"], 6)) for c in view["stages"][0]["top"]]
      == [(c["id"], round(c["p"], 6)) for c in nxt]
      and view["stages"][1]["kept"] == 3 and view["chosen"]["id"] in [c["id"] for c in nxt[:3]],
      view)

# --- two conversations at once, each on its own slot, each reusing its own prefix ---------
results = {}


def conversation(name, question):
    msgs = [{"role": "system", "content": f"You are assistant {name}."},
            {"role": "user", "content": question}]
    stamps = []
    reply = ""
    for c in chat(msgs, max_tokens=20, temperature=0, stream=True,
                  stream_options={"include_usage": True}):
        stamps.append(time.monotonic())
        if c.choices:
            reply += c.choices[0].delta.content or ""
        else:
            usage1 = c.usage
    msgs += [{"role": "assistant", "content": reply}, {"role": "user", "content": "Thanks!"}]
    second = chat(msgs, max_tokens=8, temperature=0)
    results[name] = (stamps[0], stamps[-1], reply, usage1, second.usage)


threads = [threading.Thread(target=conversation, args=(n, q)) for n, q in
           [("A", "What is 2 + 2?"), ("B", "Write a haiku about rain.")]]
for t in threads:
    t.start()
for t in threads:
    t.join()
(a0, a1, ra, fa, ua), (b0, b1, rb, fb, ub) = results["A"], results["B"]
check("two streams ran at once", a0 < b1 and b0 < a1, results)
# The first turn's prompt and most of its reply are reused (the reply's last token was
# never evaluated, and its text may tokenize differently once the turn is closed).
check("each conversation's second turn evaluates only what is new",
      ua.prompt_tokens_details.cached_tokens >= fa.prompt_tokens + fa.completion_tokens - 2
      and ub.prompt_tokens_details.cached_tokens >= fb.prompt_tokens + fb.completion_tokens - 2,
      (fa, ua, fb, ub))
check("the two answers are their own", ra and rb and ra != rb, (ra, rb))

# --- a client that goes away mid-stream frees its slot ------------------------------------
stream = client.completions.create(model=MODEL, prompt="1, 2, 3, 4,", max_tokens=900,
                                   temperature=0, stream=True)
got = 0
for c in stream:
    got += 1
    if got == 3:
        break
stream.close()
closed = time.monotonic()
while health()["slots_processing"] > 0 and time.monotonic() - closed < 20:
    time.sleep(0.05)
freed = time.monotonic() - closed
check(f"a disconnected stream stopped within {freed:.2f} s", health()["slots_processing"] == 0,
      health())
after = chat(ask, max_tokens=4, temperature=0)
check("the server serves on after a disconnect", after.choices[0].message.content, after)

# --- bad requests: clear 4xx answers that name the problem --------------------------------
s, e = raw("/v1/chat/completions", b"{not json")
check("malformed JSON is a 400", s == 400 and "not valid JSON" in e["error"]["message"], e)
s, e = raw("/v1/chat/completions", {"messages": "hi"})
check("messages of the wrong type", s == 400 and e["error"]["param"] == "messages", e)
try:
    chat(ask, temperature="hot")
    check("a string temperature is refused", False)
except openai.BadRequestError as err:
    check("a string temperature is refused", err.body["param"] == "temperature", err.body)
try:
    client.chat.completions.create(model="no-such-model", messages=ask)
    check("an unknown model is refused", False)
except openai.NotFoundError as err:
    check("an unknown model is refused", err.body["code"] == "model_not_found"
          and MODEL in err.body["message"], err.body)
try:
    chat([{"role": "user", "content": "word " * 3000}], max_tokens=4)
    check("a prompt longer than the context is refused", False)
except openai.BadRequestError as err:
    check("a prompt longer than the context is refused",
          err.body["code"] == "context_length_exceeded" and "--ctx" in err.body["message"], err.body)
try:
    chat(ask, max_tokens=100000)
    check("max_tokens beyond the context is refused", False)
except openai.BadRequestError as err:
    check("max_tokens beyond the context is refused",
          err.body["code"] == "context_length_exceeded", err.body)
s, e = raw("/v1/chat/completions", {"messages": ask, "pad": "x" * (200 << 10)})
check("an oversized body is a 413", s == 413 and "--max-body" in e["error"]["message"], e)
s, e = raw("/v1/chat/completions", {"messages": ask}, key="wrong")
check("a wrong API key is a 401", s == 401 and e["error"]["code"] == "invalid_api_key", e)
s, e = raw("/v1/nothing", {"messages": ask})
check("an unknown endpoint is a 404", s == 404, e)
models = client.models.list().data
check("/v1/models lists the model", [m.id for m in models] == [MODEL], models)
check("nothing is left running", health()["slots_processing"] == 0, health())
print("all checks passed")
