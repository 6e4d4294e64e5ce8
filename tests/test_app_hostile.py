"""The running app against hostile clients: its public API is exactly what we list, no request reads a server file
or echoes a server path, bad uploads get one line, and the server is still up afterwards.

Requests go through `gradio_client` (public endpoints) and raw queue requests (every event, private ones too, as
the web page sends them), to the tiny profile's real engine.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import httpx
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from hostile import bad_images
from serving import call_event, serve

from ui.events import PUBLIC_ENDPOINTS


REPO = Path(__file__).resolve().parent.parent
SECRET_FILE_TEXT = "root:x:0:0"
HOSTILE_PATHS = ("/etc/passwd", "../../../../etc/passwd", str(REPO / "README.md"), "/proc/self/environ")


@pytest.fixture(scope="module")
def app_url():
    from app import Settings, create_app
    from magicid.engine import MagicID

    demo = create_app(MagicID.from_profile("tiny"), Settings(max_images=2))
    url = serve(demo, queue_size=8)
    yield url
    demo.close()


@pytest.fixture(scope="module")
def client(app_url) -> Client:
    return Client(app_url, verbose=False)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, testdata):
    return bad_images(tmp_path_factory.mktemp("bad-app"), testdata / "portraits" / "barack_obama" / "1.jpg")


def server_secrets(messages: bool) -> list[str]:
    """Text that must never reach a client: server file contents and the code's location; in messages, also the
    cache folder (file outputs name their own cached copy, as Gradio serves them)."""
    readme = (REPO / "README.md").read_text(encoding="utf-8").splitlines()[1]
    return [SECRET_FILE_TEXT, readme, str(REPO)] + ([tempfile.gettempdir() + "/gradio"] if messages else [])


def assert_says_nothing_secret(text: str, messages: bool = True) -> None:
    for secret in server_secrets(messages):
        assert secret not in text, secret


def assert_up(app_url: str) -> None:
    assert httpx.get(app_url, timeout=30).status_code == 200


def test_the_public_api_is_exactly_the_listed_endpoints(client):
    named = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert sorted(named) == sorted(PUBLIC_ENDPOINTS)


def restore(client, image, references, steps: int = 2):
    return client.predict(image, references, 100, steps, 1.0, 0, api_name="/restore")


def one_line_app_error(call) -> str:
    with pytest.raises(AppError) as error:
        call()
    message = str(error.value)
    assert "\n" not in message.strip() and "Traceback" not in message
    assert_says_nothing_secret(message)
    return message


def test_restore_endpoint_refuses_bad_uploads_in_one_line(client, corpus, app_url, testdata):
    good = handle_file(str(testdata / "portraits" / "barack_obama" / "1.jpg"))
    refused = {"not_an_image.jpg", "truncated.jpg", "empty.png", "one_pixel.png", "thin_strip.png",
               "very_thin_strip.png", "bomb.png", "photo.heic"}  # fmt: skip
    for name in sorted(refused):
        bad = handle_file(str(corpus[name]))
        assert name in one_line_app_error(lambda bad=bad: restore(client, bad, [good]))
        one_line_app_error(lambda bad=bad: restore(client, good, [bad]))
    for name in ("cmyk.jpg", "sixteen_bit.png", "float.tiff", "exif_rotated.jpg", "no_face.png"):
        before_after, _, messages = restore(client, handle_file(str(corpus[name])), [good])
        assert_says_nothing_secret(json.dumps(messages))
    assert_up(app_url)


def test_restore_of_thirty_faces_is_capped_and_says_so(client, corpus, testdata):
    """Thirty copies of one face and ten references of that person: one face each, capped at 8 per request."""
    good = [handle_file(str(testdata / "portraits" / "barack_obama" / "1.jpg")) for _ in range(10)]
    _, _, messages = restore(client, handle_file(str(corpus["thirty_faces.jpg"])), good)
    assert "10 faces to restore: only the first 8 were" in messages


def test_public_endpoints_read_no_server_file(client, app_url):
    for path in HOSTILE_PATHS:
        data = {"path": path, "meta": {"_type": "gradio.FileData"}}
        for image, references in ((data, [data]), (path, [path])):
            try:
                result = restore(client, image, references)
            except Exception as error:  # refused by the server, or client-side (gradio_client uploads local paths)
                result = str(error)
            assert_says_nothing_secret(json.dumps(result, default=str))
    assert_up(app_url)


def test_no_event_private_or_public_reads_a_server_file_given_its_path(app_url):
    """Every event of the page, fed server paths in every input, as a crafted request would."""
    config = httpx.get(app_url.rstrip("/") + "/config", timeout=30).json()
    kinds = {component["id"]: component["type"] for component in config["components"]}
    events = [index for index, dependency in enumerate(config["dependencies"]) if dependency.get("inputs")]
    assert len(events) > 20  # every widget's events are here, not only the public ones
    for path in HOSTILE_PATHS:
        for index in events:
            inputs = config["dependencies"][index]["inputs"]
            data = [_hostile_value(kinds.get(component), path) for component in inputs]
            answer = call_event(app_url, index, data).replace(path, "<sent>")  # Gradio may echo what it refuses
            assert_says_nothing_secret(answer, messages=False)
    assert_up(app_url)


def test_hostile_layout_uploads_and_example_names_load_nothing(app_url, tmp_path):
    config = httpx.get(app_url.rstrip("/") + "/config", timeout=30).json()
    uploads = [
        index for index, dependency in enumerate(config["dependencies"])
        if any(target[1] == "upload" for target in dependency.get("targets", []))
    ]  # fmt: skip
    pointer = tmp_path / "pointer.json"  # an upload whose content is a server path
    pointer.write_text("/etc/passwd")
    with httpx.Client() as http:
        uploaded = http.post(app_url.rstrip("/") + "/gradio_api/upload", files={"files": open(pointer, "rb")}).json()[0]
    file_data = {"path": uploaded, "meta": {"_type": "gradio.FileData"}, "orig_name": "pointer.json"}
    for index in uploads:
        inputs = config["dependencies"][index]["inputs"]
        kinds = {component["id"]: component["type"] for component in config["components"]}
        data = [file_data if kinds.get(component) in ("file", "uploadbutton") else None for component in inputs]
        assert_says_nothing_secret(call_event(app_url, index, data), messages=False)


def _hostile_value(kind: str | None, path: str):
    if kind in ("file", "uploadbutton", "image", "gallery"):
        return {"path": path, "meta": {"_type": "gradio.FileData"}}
    if kind in ("slider", "number"):
        return -1e30 if path.startswith("/proc") else 1e30
    if kind == "state":
        return None
    return path
