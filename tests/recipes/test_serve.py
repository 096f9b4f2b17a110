"""recipes/serve.py (make serve) with the official openai client, on loopback: greedy answers equal model.generate
token for token, streamed chunks join to the same text, `stop` ends the answer, a bounded load run loses nothing,
bad requests get a 4xx with a JSON error and the server lives on, and the API key is never written anywhere."""

import json
import os
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from testkit import REPO_ROOT, free_port, greedy_ids
import warmproc

KEY = "sk-test-9f8e7d6c5b4a"  # planted: must appear in no log line
pytestmark = pytest.mark.xdist_group("serve")  # one worker, one server (~10 s to start) for the whole module
MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name three colours."}]


@pytest.fixture(scope="module")
def server(tiny_chat_model_dir, tmp_path_factory):
    """One server for the module (start-up: imports, FastAPI, model load, ~10 s), its log kept for the key check."""
    port, log = free_port(), tmp_path_factory.mktemp("serve") / "server.log"
    with open(log, "wb") as out:
        proc = warmproc.popen([sys.executable, "recipes/serve.py", "--config", "configs/chat/serve.yaml",
                               "--model_name_or_path", str(tiny_chat_model_dir), "--port", str(port),
                               "--log_level", "info"], cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT,
                              env={**os.environ, "LLM_RECIPES_API_KEY": KEY}, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while True:
        assert proc.poll() is None, log.read_text()[-3000:]
        try:
            with urllib.request.urlopen(f"{base}/health", timeout=5) as r:
                if r.status == 200:
                    break
        except OSError:
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.5)
    client = openai.OpenAI(base_url=f"{base}/v1", api_key=KEY, max_retries=0, timeout=120)
    yield client, base, proc, log
    proc.terminate()
    proc.wait(timeout=30)


def alive(client, model) -> bool:
    reply = client.chat.completions.create(model=model, messages=MESSAGES, max_tokens=2, temperature=0)
    return reply.choices[0].message.content is not None


@pytest.mark.slow  # the server start-up, once for the module
def test_openai_client_gets_greedy_answers_token_for_token_streamed_or_not(server, tiny_chat_model_dir):
    client, _, _, _ = server
    model = str(tiny_chat_model_dir)
    assert [m.id for m in client.models.list().data] == [model]
    tokenizer = AutoTokenizer.from_pretrained(tiny_chat_model_dir)
    expected = greedy_ids(AutoModelForCausalLM.from_pretrained(tiny_chat_model_dir).eval(), tokenizer, MESSAGES, 24)
    stops = tokenizer.convert_tokens_to_ids(["<|im_end|>"])
    reply = client.chat.completions.create(model=model, messages=MESSAGES, max_tokens=24, temperature=0)
    assert reply.choices[0].message.content == tokenizer.decode(expected, skip_special_tokens=True)
    assert reply.usage.completion_tokens == len(expected)
    assert reply.choices[0].finish_reason == ("stop" if expected[-1] in stops else "length")

    # no max_tokens: the server's default budget (configs/chat/serve.yaml), not transformers' 1,024
    assert client.chat.completions.create(model=model, messages=MESSAGES, temperature=0).usage.completion_tokens <= 128

    chunks = client.chat.completions.create(model=model, messages=MESSAGES, max_tokens=24, temperature=0, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == reply.choices[0].message.content

    # `stop`: the answer ends where the stop text first appears (transformers keeps the stop text itself)
    full = reply.choices[0].message.content
    stop = full[len(full) // 2:len(full) // 2 + 2]
    cut = client.chat.completions.create(model=model, messages=MESSAGES, max_tokens=24, temperature=0, stop=[stop])
    text = cut.choices[0].message.content
    assert len(text) < len(full) and full.startswith(text.removesuffix(stop)) and stop in text, (full, stop, text)


@pytest.mark.slow
def test_bounded_load_run_answers_every_request_and_the_server_lives_on(server, tiny_chat_model_dir):
    """4 clients x 5 requests, a fixed count and a fixed deadline; the numbers are printed, never asserted."""
    client, _, _, _ = server
    model = str(tiny_chat_model_dir)

    def one(i):
        start = time.perf_counter()
        reply = client.chat.completions.create(model=model, max_tokens=16, temperature=0,
                                               messages=[{"role": "user", "content": f"Request {i}: say something."}])
        return time.perf_counter() - start, reply.usage.completion_tokens, reply.choices[0].message.content

    start = time.perf_counter()
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(one, range(20), timeout=600))
    wall = time.perf_counter() - start
    assert len(results) == 20 and all(content is not None for _, _, content in results)
    latencies = sorted(r[0] for r in results)
    tokens = sum(r[1] for r in results)
    print(f"load run: 20 requests from 4 clients in {wall:.1f} s; latency p50 {statistics.median(latencies):.2f} s, "
          f"p95 {latencies[18]:.2f} s; {tokens / wall:.1f} completion tokens/s")
    assert alive(client, model)


def raw_post(base, body: bytes, key=KEY):
    request = urllib.request.Request(f"{base}/v1/chat/completions", data=body, method="POST",
                                     headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"})
    try:
        with urllib.request.urlopen(request, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


@pytest.mark.slow
def test_bad_requests_get_a_4xx_with_a_json_error_and_the_server_lives_on(server, tiny_chat_model_dir):
    client, base, proc, log = server
    model = str(tiny_chat_model_dir)
    wrong = openai.OpenAI(base_url=f"{base}/v1", api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        wrong.chat.completions.create(model=model, messages=MESSAGES, max_tokens=2)
    with pytest.raises(openai.NotFoundError, match="does not exist here"):
        client.chat.completions.create(model="someone/else", messages=MESSAGES, max_tokens=2)
    with pytest.raises(openai.BadRequestError, match="non-empty list"):
        client.chat.completions.create(model=model, messages=[], max_tokens=2)
    with pytest.raises(openai.BadRequestError, match="context of 1024 tokens"):
        client.chat.completions.create(model=model, messages=[{"role": "user", "content": "x " * 50_000}],
                                       max_tokens=2)
    status, body = raw_post(base, b'{"model": "x", "messages": [')
    assert status == 400 and "not JSON" in body["error"]["message"]
    status, body = raw_post(base, json.dumps({"model": model, "messages": MESSAGES}).encode(), key="nope")
    assert status == 401 and body["error"]["type"] == "invalid_api_key"
    request = urllib.request.Request(f"{base}/load_model", data=b'{"model": "gpt2"}', method="POST",
                                     headers={"Authorization": f"Bearer {KEY}"})
    with pytest.raises(urllib.error.HTTPError) as closed:
        urllib.request.urlopen(request, timeout=30)
    assert closed.value.code == 404
    assert proc.poll() is None and alive(client, model)
    assert KEY not in log.read_text(errors="replace")


def test_an_adapter_is_served_applied_to_its_base(lora_adapter, tiny_chat_model_dir):
    """In this process (starlette's TestClient): transformers' server cannot open a peft folder; ours merges it."""
    from peft import PeftModel
    from starlette.testclient import TestClient

    from llm_recipes.serving import RequestGuard, build_app

    name, tokenizer = str(lora_adapter), AutoTokenizer.from_pretrained(lora_adapter)
    app = build_app(name)
    app.add_middleware(RequestGuard, model=name, tokenizer=tokenizer, context=1024, max_tokens=16)
    with TestClient(app) as client:
        assert [m["id"] for m in client.get("/v1/models").json()["data"]] == [name]
        reply = client.post("/v1/chat/completions", json={"model": name, "messages": MESSAGES, "temperature": 0})
    peft = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_chat_model_dir), name).eval()
    expected = tokenizer.decode(greedy_ids(peft, tokenizer, MESSAGES, 16), skip_special_tokens=True)
    assert reply.json()["choices"][0]["message"]["content"] == expected
