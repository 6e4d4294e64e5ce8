"""The app's handlers and layout-editor logic against a fake engine (fast: no models, no browser)."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
from fakes import FakeEngine
from gradio.processing_utils import encode_pil_to_bytes
from PIL import Image

from magicid.config import DIIRConfig
from magicid.errors import LayoutError, MagicIDError
from magicid.layout import Layout
from ui.canvas import draw_canvas
from ui.drag_canvas import Drag, apply_drag, canvas_html
from ui.handlers import (
    UNEXPECTED,
    AppHandlers,
    GenerateRequest,
    controls_from_parameters,
    identity_warnings,
    user_errors,
)
from ui.layout_editor import button_edit


REPO = Path(__file__).resolve().parent.parent


@pytest.fixture()
def handlers() -> AppHandlers:
    return AppHandlers(FakeEngine())


@pytest.fixture(scope="module")
def two_people() -> Layout:
    return Layout.from_template("standing", 2, 512, 512).assign_identities(2)


def _photo(testdata: Path) -> str:
    return str(testdata / "portraits" / "barack_obama" / "1.jpg")


def test_identity_card_reads_photos_and_reports_the_face(handlers, testdata):
    card = handlers.encode_identity([_photo(testdata)], " Barack ")
    assert card.identity is not None and card.identity.name == "Barack"
    assert card.thumbnail is not None and card.status.startswith("✓")


def test_identity_card_explains_a_corrupt_upload_instead_of_failing(handlers, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    card = handlers.encode_identity([str(broken)], "A")
    assert card.identity is None and card.thumbnail is None
    assert "broken.jpg" in card.status and card.status.startswith("⚠")


def test_identity_card_explains_a_photo_without_face(handlers, tmp_path):
    blank = tmp_path / "wall.png"
    Image.new("RGB", (200, 200), (120, 120, 120)).save(blank)
    card = handlers.encode_identity([str(blank)], "A")
    assert card.identity is None and "No face found in wall.png" in card.status


def test_identity_card_refuses_images_over_the_pixel_limit(tmp_path):
    from magicid.config import Limits

    big = tmp_path / "big.png"
    Image.new("RGB", (300, 300), (1, 2, 3)).save(big)
    card = AppHandlers(FakeEngine(), Limits(max_image_pixels=10_000)).encode_identity([str(big)], "A")
    assert card.identity is None and "megapixels" in card.status


def test_generate_returns_pngs_that_carry_their_parameters(handlers, testdata, two_people):
    identities = [handlers.encode_identity([_photo(testdata)], name).identity for name in ("A", "B")]
    request = GenerateRequest(identities, two_people, "two friends", style="Film", seed=7, steps=3, num_images=2, width=512, height=512)
    from magicid.pngmeta import read_parameters

    outputs = handlers.generate(request)
    assert outputs.seed == 7 and len(outputs.images) == 2
    # what the browser downloads: the gallery re-encodes each PIL image as PNG (keeping its text chunks)
    stored = read_parameters(io.BytesIO(encode_pil_to_bytes(outputs.images[1], "png")))
    assert stored["seed"] == 7 and stored["image_index"] == 1 and stored["style"] == "Film"
    assert "35mm film" in stored["prompt"] and stored["user_prompt"] == "two friends"
    assert len(stored["layout"]["people"]) == 2
    assert [row[:2] for row in outputs.report_rows] == [[1, "A"], [1, "B"]]
    assert outputs.debug_images and outputs.debug_images[0][1] == "skeleton"


def test_generate_reports_progress_and_randomises_the_seed(handlers, testdata):
    identity = handlers.encode_identity([_photo(testdata)], "A").identity
    steps = []
    request = GenerateRequest([identity], None, "a portrait", randomize_seed=True, seed=5, steps=4)
    outputs = handlers.generate(request, progress=lambda step, total: steps.append((step, total)))
    assert steps[-1] == (4, 4)
    assert outputs.seed != 5 or handlers.generate(request).seed != 5


def test_generate_names_the_person_without_a_photo(handlers, testdata, two_people):
    identity = handlers.encode_identity([_photo(testdata)], "A").identity
    with pytest.raises(MagicIDError, match="Person 2 has no usable photo"):
        handlers.generate(GenerateRequest([identity, None], two_people, "two friends"))


def test_generate_refuses_a_layout_with_too_few_people(handlers, testdata):
    identities = [handlers.encode_identity([_photo(testdata)], name).identity for name in ("A", "B")]
    single = Layout.from_template("standing", 1).assign_identities(1)
    with pytest.raises(LayoutError, match="identity 2"):
        handlers.generate(GenerateRequest(identities, single, "two friends"))


def test_missing_and_duplicated_identities_are_warned_about(testdata, two_people):
    handlers = AppHandlers(FakeEngine(statuses=["duplicate", "missing"]))
    identities = [handlers.encode_identity([_photo(testdata)], name).identity for name in ("Ann", "Bob")]
    outputs = handlers.generate(GenerateRequest(identities, two_people, "two friends"))
    assert "Ann is shown twice" in outputs.messages and "Bob is missing" in outputs.messages
    assert identity_warnings([], ["Ann"]) == []


def test_fix_faces_appends_the_fixed_image_with_its_identity_check(testdata, two_people):
    engine = FakeEngine(statuses=["ok", "missing"])
    handlers = AppHandlers(engine)
    identities = [handlers.encode_identity([_photo(testdata)], name).identity for name in ("Ann", "Bob")]
    generated = handlers.generate(GenerateRequest(identities, two_people, "two friends", seed=4, steps=3, num_images=2))
    fixed = handlers.fix_faces(generated, 1)
    _, image, count, layout, config, _only = engine.calls[-2]
    assert image is generated.images[1] and count == 2 and layout.to_dict() == two_people.to_dict()
    assert (config.steps, config.seed) == (3, 4)
    assert len(fixed.images) == 3 and len(generated.images) == 2  # the session's previous results are not mutated
    assert [row[:2] for row in fixed.report_rows[-2:]] == [[3, "Ann"], [3, "Bob"]]
    assert fixed.report_rows[:-2] == generated.report_rows
    assert "Image 3 is image 2 with the faces of Bob re-denoised" in fixed.messages
    assert fixed.debug_images[-1][1] == "after" and fixed.identities == identities
    from magicid.pngmeta import read_parameters

    stored = read_parameters(io.BytesIO(encode_pil_to_bytes(fixed.images[2], "png")))
    assert stored["fixed_from_image"] == 2 and stored["fixed_identities"] == ["Bob"] and stored["image_index"] == 2


def test_fix_faces_keeps_a_passing_result_and_needs_a_generation_first(handlers, testdata):
    identity = handlers.encode_identity([_photo(testdata)], "Ann").identity
    generated = handlers.generate(GenerateRequest([identity], None, "a portrait", seed=1, steps=1))
    unchanged = handlers.fix_faces(generated, None)
    assert unchanged.images == generated.images and "unchanged" in unchanged.messages
    with pytest.raises(MagicIDError, match="Generate an image first"):
        handlers.fix_faces(None, 0)


def test_the_canvas_shows_the_names_typed_in_the_identity_cards(two_people):
    from ui.layout_editor import _on_name, default_names

    layout, markup, _, _, shows, names = _on_name(1, two_people, 0, "  Bob ", default_names(6))
    assert names[:2] == ["Person 1", "Bob"] and ">Bob (drag" in markup and ">Person 1 (drag" in markup
    assert ("Bob", 1) in shows["choices"] and layout is two_people
    assert _on_name(1, two_people, 0, "", names)[-1][1] == "Person 2"
    box = two_people.face_boxes()[1].astype(int)
    label = (slice(max(box[1] - 30, 0), box[1]), slice(box[0], box[2]))
    named, plain = np.asarray(draw_canvas(two_people, names=names)), np.asarray(draw_canvas(two_people))
    assert not np.array_equal(named[label], plain[label])


def test_restore_returns_before_and_after(handlers, testdata):
    photo = _photo(testdata)
    outputs = handlers.restore(photo, [photo], DIIRConfig(steps=2))
    assert outputs.before.size == outputs.after.size and "restored" in outputs.messages
    with pytest.raises(MagicIDError, match="reference photo"):
        handlers.restore(photo, [], DIIRConfig())


def test_restore_takes_who_is_who_per_face(handlers, testdata):
    photo = _photo(testdata)
    handlers.restore(photo, [photo, photo], DIIRConfig(steps=2), who="2, off")
    assert handlers.engine.calls[-1][-1] == [1, None]
    handlers.restore(photo, [photo], DIIRConfig(steps=2), who="")
    assert handlers.engine.calls[-1][-1] is None
    with pytest.raises(MagicIDError, match="Face 2 is given as '3'"):
        handlers.restore(photo, [photo], DIIRConfig(steps=2), who="1, 3")


def test_parameters_fill_the_controls_back_in(two_people):
    controls = controls_from_parameters(
        {"prompt": "x, film", "user_prompt": "x", "style": "Film", "seed": 3, "width": 512, "height": 768,
         "restore_small_faces": True, "layout": two_people.to_dict()}
    )  # fmt: skip
    assert controls["prompt"] == "x" and controls["style"] == "Film" and controls["seed"] == 3
    assert controls["size"] == (512, 768) and controls["diir_mode"] == "on"
    assert len(controls["layout"].people) == 2


def test_read_parameters_rejects_a_png_without_them(handlers, tmp_path):
    plain = tmp_path / "plain.png"
    Image.new("RGB", (64, 64)).save(plain)
    with pytest.raises(MagicIDError, match="plain.png carries no MagicID parameters"):
        handlers.read_parameters(str(plain))


def test_dragging_a_joint_or_a_face_box_edits_the_layout(two_people):
    joint = Drag.from_event({"kind": "joint", "person": 0, "joint": 4, "x": 40, "y": 60, "dx": -5, "dy": -100})
    moved, message = apply_drag(two_people, joint)
    assert np.allclose(moved.people[0].keypoints[4, :2], (40 / 512, 60 / 512)) and "right wrist" in message
    face = Drag(kind="face", person=1, joint=-1, x=0, y=0, dx=51.2, dy=-25.6)
    shifted, _ = apply_drag(two_people, face)
    delta = shifted.people[1].keypoints[:, :2] - two_people.people[1].keypoints[:, :2]
    assert np.allclose(delta, (0.1, -0.05))


def test_canvas_markup_has_a_handle_per_visible_joint_and_face(two_people):
    markup = canvas_html(two_people)
    visible = sum(int((person.keypoints[:, 2] > 0).sum()) for person in two_people.people)
    assert markup.count('data-kind="joint"') == visible and markup.count('data-kind="face"') == 2
    assert 'viewBox="0 0 512 512"' in markup and "data:image/png;base64," in markup


def test_buttons_edit_the_selected_person(two_people):
    mirrored, _ = button_edit(two_people, "mirror", 0)
    assert not np.allclose(mirrored.people[0].keypoints, two_people.people[0].keypoints)
    bigger, _ = button_edit(two_people, "bigger", 1)
    span = lambda layout: np.ptp(layout.people[1].keypoints[layout.people[1].keypoints[:, 2] > 0, 1])  # noqa: E731
    assert span(bigger) > span(two_people)
    added, _ = button_edit(two_people, "add", 0)
    assert len(added.people) == 3 and len(button_edit(added, "remove", 2)[0].people) == 2


def test_canvas_draws_face_regions_in_identity_colours(two_people):
    plain = np.asarray(two_people.render_skeleton())
    drawn = np.asarray(draw_canvas(two_people))
    box = two_people.face_boxes()[0].astype(int)
    assert drawn.shape == plain.shape
    assert not np.array_equal(drawn[box[1] : box[3], box[0]], plain[box[1] : box[3], box[0]])


def test_user_errors_become_gradio_errors_and_bugs_are_logged_not_shown(caplog):
    with pytest.raises(gr.Error, match="bad photo"):
        with user_errors():
            raise MagicIDError("bad photo")
    with pytest.raises(gr.Error) as shown:
        with user_errors():
            raise KeyError("/srv/secret/path root:x:0:0")
    assert str(shown.value.message) == UNEXPECTED and "secret" not in str(shown.value)
    assert "root:x:0:0" in caplog.text  # the traceback stays in the server log


def test_app_builds_over_a_fake_engine_without_loading_models():
    from app import Settings, create_app

    demo = create_app(FakeEngine(), Settings(max_images=2))
    config = demo.get_config_file()
    texts = [c.get("props", {}).get("value") for c in config["components"]]
    assert any(isinstance(text, str) and "Profile: fake" in text for text in texts)
    assert demo.delete_cache is not None


def test_ui_package_imports_no_torch():
    code = "import sys, ui.blocks, ui.handlers, app; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False", result.stderr


def test_settings_come_from_the_environment(monkeypatch):
    from app import Settings

    monkeypatch.setenv("MAGICID_QUEUE_SIZE", "3")
    monkeypatch.setenv("MAGICID_MAX_IMAGES", "2")
    settings = Settings.from_env()
    assert settings.queue_size == 3 and settings.max_images == 2


def test_every_example_has_a_loadable_layout_for_its_people(handlers):
    from ui.blocks import EXAMPLES, EXAMPLES_DIR

    assert len(EXAMPLES) >= 3
    for _, _, name in EXAMPLES:
        layout = handlers.layout_from_file(str(EXAMPLES_DIR / "layouts" / name))
        assert layout.assign_identities(len(layout.people)).validate(len(layout.people)) == [], name


def test_generation_settings_reach_the_config(handlers):
    request = GenerateRequest([], None, "p", style="None", diir_mode="off", diir_threshold_px=64, width=768, height=512)
    config = handlers.generation_config(request, seed=11)
    assert (config.restore_small_faces, config.restore_threshold_px, config.seed) == (False, 64, 11)
    assert (config.width, config.height) == (768, 512)


def test_downloads_go_to_private_folders_in_gradios_cache():
    from gradio.utils import get_upload_folder

    from ui.files import session_file

    first, second = session_file("layout.json"), session_file("layout.json")
    assert first.parent != second.parent and first.parent.is_dir()
    assert Path(get_upload_folder()).resolve() in first.resolve().parents


def test_on_zerogpu_only_the_diffusion_handlers_hold_a_gpu(monkeypatch):
    """With the `spaces` package (ZeroGPU), generate / restore / fix faces run under @spaces.GPU; identity
    encoding (face detection and embedding on the CPU) does not."""
    import app

    wrapped = []

    class FakeSpaces:
        @staticmethod
        def GPU(duration):  # noqa: N802 (the package's name)
            def decorate(function):
                wrapped.append(function.__name__)
                return function

            return decorate

    monkeypatch.setattr(app, "spaces", FakeSpaces)
    app.create_app(FakeEngine(), app.Settings(max_images=1))  # one image per request: no slider to choose
    assert sorted(wrapped) == ["fix_faces", "generate", "restore"]
