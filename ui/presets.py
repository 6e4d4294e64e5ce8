"""Style presets and the choices offered by the app's controls (plain data, no Gradio)."""

from __future__ import annotations


STYLE_PRESETS: dict[str, tuple[str, str]] = {
    # name: (appended to the prompt, appended to the negative prompt)
    "None": ("", ""),
    "Photo": ("photo, natural light, 50mm, sharp focus, detailed skin", "painting, cartoon, 3d render"),
    "Studio portrait": ("studio portrait, softbox lighting, plain backdrop, high detail", "cluttered background"),
    "Film": ("35mm film photo, kodak portra 400, grain, warm tones", "digital, oversaturated"),
    "Cinematic": ("cinematic still, dramatic lighting, shallow depth of field", "flat lighting"),
    "Watercolor": ("watercolor painting, soft washes, paper texture", "photo"),
    "Anime": ("anime illustration, clean line art, cel shading", "photo, realistic"),
}


def apply_style(prompt: str, negative_prompt: str, style: str) -> tuple[str, str]:
    """`prompt` and `negative_prompt` with the preset's words appended (unknown style: unchanged)."""
    positive, negative = STYLE_PRESETS.get(style, ("", ""))
    return _join(prompt, positive), _join(negative_prompt, negative)


def size_label(width: int, height: int) -> str:
    shape = "square" if width == height else ("portrait" if height > width else "landscape")
    return f"{width}x{height} ({shape})"


def parse_size(label: str) -> tuple[int, int]:
    """`"512x768 (portrait)"` or `"512x768"` -> (512, 768)."""
    width, height = label.split(" ")[0].split("x")
    return int(width), int(height)


def _join(base: str, extra: str) -> str:
    base, extra = base.strip(), extra.strip()
    return f"{base}, {extra}" if base and extra else base or extra
