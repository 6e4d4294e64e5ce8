"""Property tests: whatever JSON arrives, `Layout.from_json` / `Layout.from_dict` give a valid layout or a one-line
`LayoutError`, never another exception; and every layout that loads survives the operations the app runs on it."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from magicid.errors import LayoutError
from magicid.layout import MAX_CANVAS_SIDE, MAX_IDENTITIES, MIN_CANVAS_SIDE, Layout


JSON_SCALARS = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=8)
ANY_JSON = st.recursive(JSON_SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4), max_leaves=30)
NUMBER = st.floats(min_value=-2, max_value=3) | st.integers(-5, 5) | JSON_SCALARS
POINT = st.lists(NUMBER, min_size=2, max_size=3)
PERSON = st.fixed_dictionaries(
    {"keypoints": st.lists(POINT, min_size=17, max_size=19) | ANY_JSON},
    optional={
        "identity": st.none() | st.integers(-2, 10) | JSON_SCALARS,
        "face_box": st.none() | st.lists(NUMBER, min_size=3, max_size=5),
        "face_landmarks": st.none() | st.lists(st.lists(NUMBER, min_size=2, max_size=2), max_size=5),
    },
)
LAYOUT = st.fixed_dictionaries(
    {
        "width": st.integers(0, 5000) | JSON_SCALARS,
        "height": st.integers(0, 5000) | JSON_SCALARS,
        "people": st.lists(PERSON, max_size=4) | ANY_JSON,
    },
    optional={"version": ANY_JSON},
)
EXAMPLES = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def load_or_refuse(loader, value) -> Layout | None:
    try:
        return loader(value)
    except LayoutError as error:
        assert "\n" not in str(error)
        return None


def assert_usable(layout: Layout) -> None:
    assert MIN_CANVAS_SIDE <= layout.width <= MAX_CANVAS_SIDE and MIN_CANVAS_SIDE <= layout.height <= MAX_CANVAS_SIDE
    for person in layout.people:
        assert person.identity is None or 0 <= person.identity < MAX_IDENTITIES
    Layout.from_json(layout.to_json())  # what it saves, it loads
    layout.face_boxes()
    try:
        layout.validate(1)
    except LayoutError:
        pass


@EXAMPLES
@given(LAYOUT)
def test_any_layout_shaped_dict_loads_or_is_refused(data):
    layout = load_or_refuse(Layout.from_dict, data)
    if layout is not None:
        assert_usable(layout)


@EXAMPLES
@given(ANY_JSON)
def test_any_json_text_loads_or_is_refused(data):
    layout = load_or_refuse(Layout.from_json, json.dumps(data))
    if layout is not None:
        assert_usable(layout)


@EXAMPLES
@given(st.text(max_size=200) | st.binary(max_size=200))
def test_any_text_or_bytes_loads_or_is_refused(text):
    layout = load_or_refuse(Layout.from_json, text)
    if layout is not None:
        assert_usable(layout)
