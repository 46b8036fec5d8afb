"""Serving voices: the OpenAI-compatible server on loopback, driven by the official `openai` client,
and the MCP server over stdio, driven by the `mcp` client; two tiny voices exported to GGUF."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from conftest import trained_voice
from conftest import needs_llama_cpp

pytestmark = needs_llama_cpp


@pytest.fixture(scope="module")
def voices(tmp_path_factory, tiny_model):
    """A folder of two exported voices: ``anna`` (completion) and ``ben`` (chat)."""
    from mimetic import ExportConfig, PrepareConfig
    from mimetic.voice.export import export

    root = tmp_path_factory.mktemp("serve")
    quick = ExportConfig(formats=["gguf"], quantizations=["q8_0"], verify=False)
    settings = dict(max_steps=2, eval_every=10, learning_rate=5e-2, lora_r=4, lora_alpha=8)
    anna = trained_voice(root, tiny_model, name="anna", **settings)
    ben = trained_voice(root, tiny_model, name="ben", prepare_config=PrepareConfig(format="chat"), **settings)
    for ws in (anna, ben):
        export(ws, config=quick)
    return root


@pytest.fixture(scope="module")
def server(voices):
    from mimetic.frontends.serve import ServeConfig, Server, find_models

    models, _ = find_models([voices])
    with Server(models, ServeConfig(port=0, threads=1)) as s:
        yield s


@pytest.fixture()
def client(server):
    from openai import OpenAI

    return OpenAI(base_url=server.url, api_key="unused", max_retries=0)


def test_models_lists_each_voice_and_run(voices, client):
    from mimetic import Workspace

    ids = {m.id for m in client.models.list().data}
    runs = {name: Workspace.open(voices / name).finished_runs()[-1] for name in ("anna", "ben")}
    assert {"anna", "ben", f"anna@{runs['anna']}", f"ben@{runs['ben']}"} <= ids
    assert client.models.retrieve("anna").id == "anna"


def test_chat_and_completion_answer_and_are_logged(voices, client):
    from mimetic import Workspace

    chat = client.chat.completions.create(model="ben", messages=[{"role": "user", "content": "Write about the harbour."}],
                                          max_tokens=8, seed=5, temperature=0.7)
    assert chat.model == "ben" and chat.object == "chat.completion"
    assert chat.choices[0].message.role == "assistant" and chat.choices[0].finish_reason in ("stop", "length")
    assert 1 <= chat.usage.completion_tokens <= 8 and chat.usage.prompt_tokens > 10  # the chat template and system prompt
    again = client.chat.completions.create(model="ben", messages=[{"role": "user", "content": "Write about the harbour."}],
                                           max_tokens=8, seed=5, temperature=0.7)
    assert again.choices[0].message.content == chat.choices[0].message.content  # same seed, same text

    done = client.completions.create(model="anna", prompt="The kettle had been singing", max_tokens=6, seed=1)
    assert done.object == "text_completion" and done.choices[0].text and done.usage.completion_tokens <= 6
    logged = Workspace.open(voices / "anna").generations(1)[0]
    params = json.loads(logged["params"])
    assert logged["command"] == "serve completion" and logged["output"] == done.choices[0].text
    assert logged["prompt"] == "The kettle had been singing" and params["served_as"] == "anna" and logged["seed"] == 1
    ben_log = Workspace.open(voices / "ben").generations(1)[0]
    assert ben_log["command"] == "serve chat" and "not any person named" in ben_log["prompt"]  # the default system prompt


def test_streaming_gives_the_same_text(client):
    whole = client.chat.completions.create(model="anna", messages=[{"role": "user", "content": "We walked along"}],
                                           max_tokens=10, seed=9)
    stream = client.chat.completions.create(model="anna", messages=[{"role": "user", "content": "We walked along"}],
                                            max_tokens=10, seed=9, stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert len(chunks) >= 3 and text == whole.choices[0].message.content
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] in ("stop", "length")
    streamed = "".join(c.choices[0].text for c in client.completions.create(model="anna", prompt="We walked along",
                                                                           max_tokens=10, seed=9, stream=True))
    assert streamed == whole.choices[0].message.content  # a completion voice continues the user's text either way


def test_unknown_model_and_bad_parameters(client):
    import openai

    with pytest.raises(openai.NotFoundError, match="does not exist here. Models: anna"):
        client.chat.completions.create(model="nobody", messages=[{"role": "user", "content": "Hi"}])
    with pytest.raises(openai.BadRequestError, match="'temperature' must be between 0 and 2"):
        client.chat.completions.create(model="anna", messages=[{"role": "user", "content": "Hi"}], temperature=3)
    with pytest.raises(openai.BadRequestError, match="'max_tokens' must be an integer"):
        client.completions.create(model="anna", prompt="Hi", max_tokens=1.5)
    with pytest.raises(openai.BadRequestError, match="messages"):
        client.chat.completions.create(model="anna", messages=[])
    with pytest.raises(openai.BadRequestError, match="exceed the context"):
        client.completions.create(model="anna", prompt="Hi", max_tokens=100_000)


def test_api_key_and_host_rules(voices):
    from openai import AuthenticationError, OpenAI

    from mimetic import MimeticError
    from mimetic.frontends.serve import ServeConfig, Server, find_models

    with pytest.raises(MimeticError, match="without a key"):
        ServeConfig(host="0.0.0.0")
    models, _ = find_models([voices / "anna"])
    with Server(models, ServeConfig(port=0, api_key="s3cret", threads=1)) as s:
        with pytest.raises(AuthenticationError):
            OpenAI(base_url=s.url, api_key="wrong", max_retries=0).models.list()
        assert [m.id for m in OpenAI(base_url=s.url, api_key="s3cret", max_retries=0).models.list().data][0] == "anna"


def test_concurrent_requests_to_two_voices_are_not_mixed(voices, server):
    """16 requests, 4 at a time, alternating voices: each answer is its own voice's text for its seed."""
    from concurrent.futures import ThreadPoolExecutor

    from openai import OpenAI

    client = OpenAI(base_url=server.url, api_key="unused", max_retries=0)

    def ask(i: int) -> tuple[str, int, str, str]:
        model = ("anna", "ben")[i % 2]
        r = client.completions.create(model=model, prompt="The river rose", max_tokens=6, seed=i % 4)
        return model, i % 4, r.model, r.choices[0].text

    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(ask, range(16)))
    assert all(model == got for model, _, got, _ in answers)
    by_key: dict[tuple[str, int], set[str]] = {}
    for model, seed, _, text in answers:
        by_key.setdefault((model, seed), set()).add(text)
    assert all(len(texts) == 1 for texts in by_key.values())  # same voice and seed: same text, whatever ran beside it


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_cli_serve_starts_and_stops(voices):
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "mimetic", "serve", str(voices), "--port", str(port), "--threads", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=2) as r:
                    ids = [m["id"] for m in json.load(r)["data"]]
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read() if proc.poll() is not None else "timeout"
                time.sleep(0.3)
        assert "anna" in ids and "ben" in ids
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    assert "Serving at http://127.0.0.1:" in out and "anna" in out


def test_cli_serve_without_exports_says_what_to_do(tmp_path, tiny_model):
    from conftest import prepared_voice

    prepared_voice(tmp_path, tiny_model, name="carol")
    r = subprocess.run([sys.executable, "-m", "mimetic", "serve", str(tmp_path)], capture_output=True, text=True, timeout=120)
    out = " ".join((r.stdout + r.stderr).split())
    assert r.returncode == 1 and "No exported voice" in out and "mimetic export" in out and "Traceback" not in out


def test_mcp_tools_over_stdio(voices):
    import anyio
    from mcp import ClientSession, StdioServerParameters, stdio_client

    async def session() -> tuple[list[str], list[dict], str, str, bool]:
        params = StdioServerParameters(command=sys.executable, args=["-m", "mimetic", "mcp", str(voices)])
        async with stdio_client(params) as (read, write), ClientSession(read, write) as s:
            await s.initialize()
            tools = [t.name for t in (await s.list_tools()).tools]
            listed = await s.call_tool("list_voices", {})
            wrote = await s.call_tool("write_in_voice", {"voice": "anna", "opening": "The kettle", "length": 6, "seed": 2})
            chat = await s.call_tool("write_in_voice", {"voice": "ben", "brief": "A note about rain.", "length": 6, "seed": 2})
            bad = await s.call_tool("write_in_voice", {"voice": "anna", "brief": "A note about rain."})
            no_rewrite = await s.call_tool("rewrite_in_voice", {"voice": "anna", "draft": "It rained. We stayed in."})
            return tools, listed.structured_content["result"], wrote.content[0].text, chat.content[0].text, bad, no_rewrite
    tools, listed, wrote, chat, bad, no_rewrite = anyio.run(session)
    assert {"list_voices", "write_in_voice", "rewrite_in_voice"} <= set(tools)
    assert no_rewrite.is_error and "trained to continue text, not to rewrite" in no_rewrite.content[0].text
    assert {v["id"] for v in listed} >= {"anna", "ben"} and {v["format"] for v in listed} == {"completion", "chat"}
    assert wrote and isinstance(chat, str)
    assert bad.is_error and "continues text: give an opening" in bad.content[0].text


def test_the_embedded_base_model_is_offered_from_its_own_gguf(voices, tmp_path):
    """A voice trained on the embedded model: the base model is served from the wheel's GGUF file."""
    import shutil

    from mimetic.core.config import VoiceConfig
    from mimetic.models.loading import embedded_gguf_path
    from mimetic.frontends.serve import find_models

    copy = shutil.copytree(voices / "anna", tmp_path / "dora", symlinks=True)
    for path in (copy / "runs").glob("*/config.toml"):
        vc = VoiceConfig.load(path)
        vc.train.base_model = "smollm2-135m-instruct"
        path.write_text(vc.dumps())
    models, notes = find_models([copy])
    base = [m for m in models if m.kind == "base"]
    assert [(m.id, m.gguf, m.format) for m in base] == [("smollm2-135m-instruct", embedded_gguf_path(), "chat")]
    assert base[0].workspace is None and not notes


def test_unknown_and_unsupported_parameters_are_refused_by_name(client):
    """Issue 31, 7: nothing a client asks for is silently not done; bounds are written as numbers."""
    import openai

    hi = [{"role": "user", "content": "Hi"}]
    with pytest.raises(openai.BadRequestError, match="Unrecognized request argument supplied: temprature") as e:
        client.chat.completions.create(model="anna", messages=hi, max_tokens=4, extra_body={"temprature": 0.2})
    assert e.value.body["param"] == "temprature" and e.value.status_code == 400
    with pytest.raises(openai.BadRequestError, match="'tools' is not supported"):
        client.chat.completions.create(model="anna", messages=hi, max_tokens=4,
                                       tools=[{"type": "function", "function": {"name": "f", "parameters": {}}}])
    with pytest.raises(openai.BadRequestError, match="'response_format' is not supported"):
        client.chat.completions.create(model="anna", messages=hi, max_tokens=4, response_format={"type": "json_object"})
    with pytest.raises(openai.BadRequestError, match="Unrecognized request argument supplied: wibble"):
        client.completions.create(model="anna", prompt="Hi", max_tokens=4, extra_body={"wibble": True})
    ok = client.chat.completions.create(model="anna", messages=hi, max_tokens=4, seed=1, user="someone", logprobs=False,
                                        response_format={"type": "text"}, metadata={"k": "v"}, store=False)
    assert ok.choices[0].finish_reason in ("stop", "length")  # what changes nothing in the text is accepted
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model="anna", prompt="Hi", max_tokens=2_000_000)
    assert "'max_tokens' must be between 1 and 1048576; got 2000000" in e.value.message


def test_the_voices_are_loaded_before_the_first_request(voices):
    """Issue 31, 11: ``serve`` loads the published voices before it listens (the first request
    took 64.5 s); the MCP server loads them while the client connects (its first call took 33 s)."""
    from openai import OpenAI

    from mimetic.frontends.mcpserver import create_server
    from mimetic.frontends.serve import ServeConfig, Server, find_models

    models, _ = find_models([voices])
    published = {m.gguf for m in models if m.id in ("anna", "ben")}
    with Server(models, ServeConfig(port=0, threads=1)) as s:
        assert published <= set(s.voices.loaded())  # loaded before any request
        t = time.monotonic()
        OpenAI(base_url=s.url, api_key="unused", max_retries=0).completions.create(model="anna", prompt="The sea", max_tokens=2)
        assert time.monotonic() - t < 5
    with Server(models, ServeConfig(port=0, threads=1, max_loaded=1)) as s:
        assert len(s.voices.loaded()) == 1  # never more than max_loaded
    mcp = create_server([voices], ServeConfig(threads=1))
    try:
        mcp.warming.join(120)
        assert published <= set(mcp.voices.loaded())  # no tool has been called yet
    finally:
        mcp.voices.close()
