"""The writer's desk (issue 15): what it guards, without a browser (FastAPI's test client), and
the whole path in a real browser (Playwright driving Debian's Chromium) on a real server on
127.0.0.1: a voice from a folder, its corpus report, training with live progress, the page
closed and reopened mid-run, stop and resume, writing side by side with a mark, the evaluation
report and an export. The browser test takes screenshots into $MIMETIC_SCREENSHOTS (a temporary folder by default)."""

from __future__ import annotations

import os
import tempfile
import socket
import threading
import time
from pathlib import Path

import pytest

from conftest import has_llama_cpp, make_corpus
from mimetic import Workspace
from mimetic.frontends.app import AppConfig, create_app

CHROMIUM = Path("/usr/bin/chromium")
# screenshots of the tiny test model go to MIMETIC_SCREENSHOTS when set (never over docs/app, whose pictures show a real voice)
DOCS = Path(os.environ.get("MIMETIC_SCREENSHOTS") or tempfile.mkdtemp(prefix="mimetic-desk-shots-"))


@pytest.fixture()
def desk(tmp_path):
    from fastapi.testclient import TestClient

    (tmp_path / "writing").mkdir()
    (tmp_path / "writing" / "essay.md").write_text("# An essay\n\n" + "The harbour was quiet that morning. " * 40)
    config = AppConfig(tmp_path / "voices", allowed=[tmp_path / "writing"])
    client = TestClient(create_app(config), base_url="http://127.0.0.1")
    return config, client, tmp_path


def test_only_its_own_address_and_origin_and_page_may_ask(desk):
    config, client, _ = desk
    assert client.get("/").status_code == 200
    assert client.get("/", headers={"host": "evil.example"}).status_code == 421  # DNS rebinding
    form = {"name": "v", "folder": ""}
    r = client.post("/voices", data=form, follow_redirects=False)
    assert r.status_code == 403 and "did not come from mimetic" in r.text  # no CSRF token
    r = client.post("/voices", data={**form, "csrf": "guess"}, follow_redirects=False)
    assert r.status_code == 403
    r = client.post("/voices", data={**form, "csrf": config.csrf}, headers={"origin": "http://evil.example"}, follow_redirects=False)
    assert r.status_code == 403  # a cross-site form, even with a stolen token
    r = client.post("/voices", data={**form, "csrf": config.csrf}, headers={"origin": "http://127.0.0.1:8765"}, follow_redirects=False)
    assert r.status_code == 303 and (config.voices / "v" / "mimetic.toml").exists()
    assert "Traceback" not in client.get("/voices/nobody/train").text


def test_a_token_is_asked_when_the_app_serves_beyond_this_machine(tmp_path):
    from fastapi.testclient import TestClient

    config = AppConfig(tmp_path / "voices", token="s3cret", hosts=("127.0.0.1", "localhost", "192.168.1.5"))
    client = TestClient(create_app(config), base_url="http://192.168.1.5")
    assert client.get("/").status_code == 401
    assert client.get("/?token=wrong").status_code == 401
    r = client.get("/?token=s3cret")
    assert r.status_code == 200 and "mimetic_token" in r.headers.get("set-cookie", "")
    assert client.get("/").status_code == 200  # the cookie from now on


def test_no_path_outside_what_the_writer_allowed(desk):
    config, client, tmp = desk
    (tmp / "secret").mkdir()
    (tmp / "secret" / "diary.txt").write_text("private")
    (tmp / "writing" / "link").symlink_to(tmp / "secret")
    ok = client.get("/api/folders", params={"path": str(tmp / "writing")}).json()
    assert ok["path"] == str(tmp / "writing") and str(tmp / "writing" / "link") not in ok["folders"]  # a link out is not offered
    for path in (str(tmp / "writing" / ".." / "secret"), str(tmp / "secret"), "/etc", str(tmp / "writing" / "link"), "~"):
        r = client.get("/api/folders", params={"path": path})
        assert r.status_code == 400 and "outside the folders this app may read" in r.json()["error"], path
        r = client.post("/voices", data={"name": "x", "folder": path, "csrf": config.csrf})
        assert r.status_code == 400 and "outside the folders" in r.text and "Traceback" not in r.text
    for name in ("../x", "/abs", "a/b", ".hidden"):
        r = client.post("/voices", data={"name": name, "folder": "", "csrf": config.csrf})
        assert r.status_code == 400 and "cannot name a voice" in r.text and not (tmp / "x").exists()
    assert sorted(p.name for p in config.voices.iterdir()) == []


def test_uploads_are_copied_by_name_into_the_voice_within_limits(desk, monkeypatch):
    import mimetic.frontends.app.security as app_module

    config, client, tmp = desk
    client.post("/voices", data={"name": "v", "folder": "", "csrf": config.csrf})
    h = {"x-csrf-token": config.csrf}
    r = client.post("/voices/v/upload", files=[("files", ("../../escape.txt", b"one two three"))], headers=h)
    assert r.status_code == 200 and r.json()["saved"] == ["escape.txt"]
    assert (config.voices / "v" / "sources" / "escape.txt").read_text() == "one two three"
    assert not (tmp / "escape.txt").exists() and not (config.voices / "escape.txt").exists()
    r = client.post("/voices/v/upload", files=[("files", ("run.sh", b"rm -rf /"))], headers=h)
    assert r.status_code == 400 and "not a kind of file mimetic reads" in r.json()["error"]
    monkeypatch.setattr(app_module, "MAX_UPLOAD_MB", 1)
    r = client.post("/voices/v/upload", files=[("files", ("big.txt", b"x" * (1 << 20 + 1)))], headers=h)
    assert r.status_code == 400 and "larger than 1 MB" in r.json()["error"]
    assert sorted(p.name for p in (config.voices / "v" / "sources").iterdir()) == ["escape.txt"]  # no partial file left
    r = client.post("/voices/v/upload", files=[("files", ("a.txt", b"x"))])  # no token
    assert r.status_code == 403


def _wait_job(ws, job_id, timeout_s=300):
    from mimetic.frontends import jobs

    deadline = time.time() + timeout_s
    while time.time() < deadline:
        job = jobs.load(ws, job_id)
        if not job.running:
            return job
        time.sleep(0.3)
    raise AssertionError(f"job {job_id} did not end in {timeout_s} s")


def test_files_dropped_on_the_desk_are_read_with_the_folders(tmp_path, tiny_model):
    from fastapi.testclient import TestClient

    from mimetic.frontends import jobs

    make_corpus(tmp_path / "writing", n_docs=12, paragraphs=8)
    config = AppConfig(tmp_path / "voices", allowed=[tmp_path], base_model=tiny_model)
    client = TestClient(create_app(config), base_url="http://127.0.0.1")
    r = client.post("/voices", data={"name": "v", "folder": str(tmp_path / "writing"), "csrf": config.csrf}, follow_redirects=False)
    assert r.status_code == 303
    ws = Workspace.open(config.voices / "v", create=False)
    assert _wait_job(ws, jobs.all_jobs(ws, "create")[0].id).status == "finished"
    before = ws.read_manifest().words
    dropped = "\n\n".join(f"The lighthouse keeper counted {i} gulls on the quay and wrote each one down in the ledger by lamplight."
                           for i in range(40))
    r = client.post("/voices/v/upload", files=[("files", ("ledger.txt", dropped.encode()))], headers={"x-csrf-token": config.csrf})
    assert r.status_code == 200
    assert "ledger.txt" in client.get("/voices/v/corpus").text  # the page says it is waiting to be read
    r = client.post("/voices/v/ingest", data={"csrf": config.csrf}, follow_redirects=False)
    assert r.status_code == 303
    job = jobs.all_jobs(ws, "create")[0]
    assert _wait_job(ws, job.id).status == "finished", job.message
    m = ws.read_manifest()
    assert m.words >= before + 40 * 15, (before, m.words)
    assert any(f["path"].endswith("ledger.txt") and f.get("doc_id") for f in m.files)
    assert str(tmp_path / "writing") in " ".join(m.sources)  # the folder was read again too
    assert any(e.get("event") == "progress" and e.get("eta_s") is not None for e in jobs.events(ws, job.id))


def test_a_failed_job_says_where_to_fix_it_can_be_dismissed_and_leaves_no_zombie(desk):
    from mimetic.frontends import jobs

    config, client, tmp = desk
    client.post("/voices", data={"name": "v", "folder": "", "csrf": config.csrf})
    ws = Workspace.open(config.voices / "v", create=False)
    job = jobs.start(ws, "create", {"folders": [str(tmp / "gone")]})
    ended = _wait_job(ws, job.id, 120)
    assert ended.status == "failed"
    for _ in range(50):  # the app reaps its finished children
        try:
            state = Path(f"/proc/{job.pid}/stat").read_text().split(") ", 1)[1][:1]
        except OSError:
            state = "gone"
        if state == "gone":
            break
        time.sleep(0.1)
    assert state == "gone", f"job process {job.pid} left as state {state}"
    page = client.get("/voices/v/corpus").text
    assert f'data-ended="{job.id}"' in page and "Dismiss" in page
    r = client.post(f"/voices/v/jobs/{job.id}/dismiss", data={"csrf": config.csrf}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/voices/v/corpus"
    assert f'data-ended="{job.id}"' not in client.get("/voices/v/corpus").text
    assert client.post(f"/voices/v/jobs/{job.id}/dismiss").status_code == 403  # no token


def test_an_error_page_has_a_button_to_the_page_that_fixes_it_not_a_command(desk):
    from html.parser import HTMLParser

    config, client, _ = desk
    client.post("/voices", data={"name": "v", "folder": "", "csrf": config.csrf})
    r = client.get("/voices/v/write")  # no trained voice yet
    assert r.status_code == 400
    assert "mimetic train" not in r.text and "mimetic " not in r.text.split("<main>")[1]
    links = []

    class Links(HTMLParser):
        def handle_starttag(self, tag, attrs):
            a = dict(attrs)
            if tag == "a" and a.get("id") == "fix":
                links.append(a["href"])

    Links().feed(r.text)
    assert links == ["/voices/v/train"]
    r = client.get("/api/voices/v/plan")  # the pages' scripts get the same button
    assert r.status_code == 400 and r.json()["action"]["href"] == "/voices/v/corpus" and "mimetic" not in r.json()["hint"]


def test_the_folder_picker_lists_folder_names(desk):
    config, client, tmp = desk
    (tmp / "writing" / "novels").mkdir()
    d = client.get("/api/folders", params={"path": str(tmp / "writing")}).json()
    assert d["names"] == ["novels"] and d["folders"] == [str(tmp / "writing" / "novels")] and d["name"] == "writing"
    js = (Path(create_app.__code__.co_filename).parent / "static" / "app.js").read_text(encoding="utf-8")
    assert not any(ord(c) > 0xFFFF for c in js), "an emoji glyph in the picker: a box where Chromium lacks the font"


# ----------------------------------------------------------------------------- in a real browser


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def server(tmp_path, tiny_model):
    import uvicorn

    config = AppConfig(tmp_path / "voices", allowed=[tmp_path], base_model=tiny_model)
    port = _free_port()
    srv = uvicorn.Server(uvicorn.Config(create_app(config), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    for _ in range(100):
        if srv.started:
            break
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", config, tmp_path
    srv.should_exit = True
    thread.join(10)


def _browser():
    if not CHROMIUM.exists():
        if os.environ.get("CI"):
            pytest.fail("Chromium is missing in CI: `make test` installs Debian's chromium package (as root).")
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    pw = sync_playwright().start()
    browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=[
        "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run", "--disable-quic"])
    return pw, browser


def _shot(page, name: str) -> None:
    DOCS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(DOCS / f"{name}.png"), full_page=True)


def _wait_for_step(page, step: int, timeout_s: float = 120) -> None:
    """Wait until the live progress shows ``step`` (polled from Python: the app's
    Content-Security-Policy forbids the string evaluation Playwright's wait_for_function uses)."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        text = (page.inner_text("#step") or "").split()[0] if page.locator("#step").count() else ""
        if text.isdigit() and int(text) >= step:
            return
        time.sleep(0.2)
    raise AssertionError(f"the training page never showed step {step}")


def test_a_writer_goes_from_a_folder_to_an_exported_voice_in_the_browser(server, tiny_model):
    from mimetic.core.config import EvaluateConfig
    from mimetic.core.logdb import marks
    from mimetic.frontends import jobs

    url, config, tmp = server
    make_corpus(tmp / "writing", n_docs=16, paragraphs=8)
    (tmp / "writing" / "letters.md").write_text("\n\n".join(
        f"Margaret wrote to Tobias again on day {i}, and Tobias answered Margaret by the evening post, as he always did."
        for i in range(12)))
    pw, browser = _browser()
    try:
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        # 1. a new voice from a folder, chosen with the folder picker
        page.goto(url)
        page.fill("input[name=name]", "my-writing")
        page.click("#browse")  # the allowed roots first, then their folders, by name, with a drawn icon
        page.click(f"#folders a:text-is('{tmp}')")
        page.wait_for_selector("#folders a:text-is('writing')")
        labels = page.locator("#folders a").all_inner_texts()
        assert "writing" in labels and not any(str(tmp) + "/" in t for t in labels), labels
        icon = page.locator("#folders a:text-is('writing') .icon.folder")
        box = icon.bounding_box()
        assert box and box["width"] > 8 and box["height"] > 6
        assert "svg" in icon.evaluate("e => getComputedStyle(e).backgroundImage")
        page.click("#folders a:text-is('writing')")
        page.click("#folders a:text-is('Use “writing”')")
        assert page.input_value("#folder") == str(tmp / "writing")
        page.click("text=Create the voice")
        # 2. the ingest report, when the job has read the writing (the page reloads itself)
        page.wait_for_selector("#kept-words", timeout=120_000)
        ws = Workspace.open(config.voices / "my-writing", create=False)
        assert page.inner_text("#kept-words") == f"{ws.read_manifest().words:,}"
        row = page.locator("#names tr", has_text="Margaret")
        row.locator("input[name=alias]").fill("Maggie")
        row.locator("button[value=alias]").click()
        page.wait_for_selector("#names b:text-is('Maggie')")
        assert ws.load_config().ingest.aliases == {"Margaret": "Maggie"}
        _shot(page, "corpus")
        # small, fast settings for the tiny model (a writer keeps the defaults)
        vc = ws.load_config()
        vc.train = type(vc.train)(**{**vc.train.__dict__, "epochs": 50.0, "batch_size": 2, "eval_every": 5, "checkpoint_every": 2,
                                     "log_every": 1, "learning_rate": 5e-3, "lora_r": 4, "lora_alpha": 8, "precision": "fp32"})
        vc.evaluate = EvaluateConfig(sample_words=200, set_words=100, n_mfw=30, new_tokens=24, prefix_tokens=16,
                                     batch_size=4, bootstrap=100, extraction_prefixes=4)
        ws.save_config(vc)
        # 3. training with live progress; the page closed and opened again finds the run
        page.click("text=Train")
        page.click("#plan-button")
        page.wait_for_selector("#plan-lines li", timeout=60_000)
        page.fill("input[name=time_budget_min]", "30")
        page.click("text=More")
        page.fill("input[name=max_steps]", "5000")
        page.click("text=Start training")
        _wait_for_step(page, 3)
        assert int(page.get_attribute("#curve", "data-points") or 0) >= 2
        # every measured point is drawn (a short run's curve is its points, not one dot)
        assert page.get_attribute("#curve", "data-drawn") == page.get_attribute("#curve", "data-points")
        assert page.inner_text("#job-eta").endswith("left")
        page.close()
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.goto(f"{url}/voices/my-writing/train")
        _wait_for_step(page, 4)
        assert page.locator("#training").count() == 1
        _shot(page, "train")
        # stop (a checkpoint is kept), then resume with a short budget that ends the run
        page.click("text=Stop (keeps a checkpoint)")
        page.wait_for_selector("#resume", timeout=120_000)
        assert "resume" in page.inner_text("#last-run").lower() and page.locator("#resume").count() == 1
        page.fill("#resume input[name=time_budget_min]", "0.05")
        page.click("#resume button")
        page.wait_for_selector("#last-run.ok", timeout=180_000)
        assert page.inner_text("#verdict").startswith(("Closer:", "Not yet closer:"))
        run = ws.published_run()
        assert run and (ws.runs_dir / run / "summary.json").exists()
        assert page.locator("#versions").count() == 1
        # 4. writing, side by side, streamed; a mark kept in mimetic.db
        page.click("text=Write")
        page.fill("#prompt", "The kettle")
        page.fill("input[name=max_new_tokens]", "12")
        t = time.perf_counter()
        page.click("#write-button")
        page.wait_for_selector("#outputs[data-done='1']", timeout=120_000)
        print(f"\nthe desk's side-by-side write (12 tokens each) took {time.perf_counter() - t:.1f} s in the browser")
        assert page.get_attribute("#write-progress", "value") == page.get_attribute("#write-progress", "max") != "1"
        assert page.inner_text("#write-status").startswith("written in")
        assert page.inner_text("#out-base").strip() and page.inner_text("#out-voice").strip()
        page.click(".marks[data-model=voice] button[data-label=best]")
        page.wait_for_selector("#mark-status:has-text('Marked')")
        _shot(page, "write")
        made = marks(ws.db_path)
        assert [m["label"] for m in made] == ["best", "worse"]
        # 5. the evaluation and its report; an export with the commands to copy
        page.click("text=Evaluate & export")
        page.fill("input[name=sample_words]", "200")
        page.click("#evaluate button")
        page.wait_for_selector("ul.summary li", timeout=300_000)
        assert "Fit:" in page.inner_text("ul.summary")
        # a plain verdict first, before any figure
        assert page.inner_text("main > p:first-of-type") == page.inner_text("#verdict")
        assert page.inner_text("#verdict").startswith(("Close:", "Getting closer:", "Not yet close:"))
        eval_job = next(j for j in jobs.all_jobs(ws, "evaluate"))
        shares = [e for e in jobs.events(ws, eval_job.id) if e.get("event") == "progress" and e.get("total") == 100]
        assert shares and any(e.get("eta_s") is not None for e in shares)  # a bar and a time left, not an endless bar
        report = browser.new_page()
        answer = report.goto(f"{url}/voices/my-writing/report")
        assert answer.status == 200 and report.title() == f"mimetic evaluation — run {run}"
        assert report.locator("section.error").count() == 0
        report.close()
        if not has_llama_cpp():
            page.uncheck("input[value=gguf]")
            page.uncheck("input[value=ollama]")
        else:
            page.uncheck("input[value=q4_k_m]")
            page.check("input[value=q8_0]")
        page.click("#export button")
        page.wait_for_selector("#export ul li", timeout=300_000)
        if has_llama_cpp():
            assert "ollama create" in page.inner_text("#ollama-cmd") and ".gguf" in page.inner_text("#llama-cmd")
        assert (ws.root / "exports" / run / "adapter" / "adapter_config.json").exists()
        _shot(page, "evaluate")
        page.goto(url)  # the voice at a glance
        assert "my-writing" in page.inner_text("#voices") and "% of sets" in page.inner_text("#voices")
        _shot(page, "voices")
    finally:
        browser.close()
        pw.stop()


def test_a_killed_training_process_says_what_happened_and_how_to_resume(tmp_path, tiny_model):
    from fastapi.testclient import TestClient

    from conftest import prepared_voice, small_train_config
    from mimetic.frontends import jobs

    ws = prepared_voice(tmp_path / "voices", tiny_model, name="v")
    vc = ws.load_config()
    vc.train = small_train_config(tiny_model, max_steps=100_000)
    ws.save_config(vc)
    job = jobs.start(ws, "train", {"time_budget_min": 30})
    deadline = time.time() + 120
    while not list(ws.runs_dir.glob("*/checkpoint/state.pt")) and time.time() < deadline:
        time.sleep(0.3)
    os.kill(job.pid, 9)
    for _ in range(50):
        if jobs.load(ws, job.id).status == "died":
            break
        time.sleep(0.1)
    assert jobs.load(ws, job.id).status == "died"
    config = AppConfig(tmp_path / "voices", allowed=[tmp_path])
    page = TestClient(create_app(config), base_url="http://127.0.0.1").get("/voices/v/train").text
    assert "stopped before it could finish" in page and "Resume run" in page and "Traceback" not in page
    from mimetic import MimeticError

    with pytest.raises(MimeticError, match="No job 'nonesuch'"):
        jobs.load(ws, "nonesuch")
