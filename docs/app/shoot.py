"""Screenshots of the desk on a real voice, for the README and docs/desk.md.

    .venv/bin/python docs/app/shoot.py VOICES_FOLDER VOICE_NAME "An opening of the writer's"

Starts the desk (``serve_app``) on a free port on 127.0.0.1 over ``VOICES_FOLDER``, opens it in
Debian's Chromium through Playwright and saves voices.png, corpus.png, train.png and write.png
(the base model and the voice side by side on the opening) into this folder.
"""

import socket
import sys
import threading
import time
from pathlib import Path

from playwright.sync_api import sync_playwright

from mimetic.frontends.app import serve_app

HERE = Path(__file__).resolve().parent


def main(voices: Path, name: str, opening: str) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    threading.Thread(target=serve_app, kwargs=dict(voices=voices, port=port, open_browser=False, allowed=[voices]), daemon=True).start()
    url = f"http://127.0.0.1:{port}"
    time.sleep(3)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        for shot, path in [("voices", "/"), ("corpus", f"/voices/{name}/corpus"), ("train", f"/voices/{name}/train")]:
            page.goto(url + path)
            page.screenshot(path=str(HERE / f"{shot}.png"), full_page=True)
        page.goto(f"{url}/voices/{name}/write")
        page.fill("#prompt", opening)
        page.fill("input[name=max_new_tokens]", "120")
        page.click("#write-button")
        page.wait_for_selector("#outputs[data-done='1']", timeout=600_000)
        page.screenshot(path=str(HERE / "write.png"), full_page=True)
        browser.close()


if __name__ == "__main__":
    main(Path(sys.argv[1]).resolve(), sys.argv[2], sys.argv[3])
