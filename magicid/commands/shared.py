"""What the model-running commands (`generate`, `restore`) share: profile flags, identities, debug images."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from magicid.config import PROFILES


PROFILE_OVERRIDES = (
    "base_model", "vae", "openpose_controlnet", "landmark_controlnet", "ip_adapter_repo", "ip_adapter_weight",
    "image_encoder", "magicid_weights", "insightface_root", "device", "dtype",
)  # fmt: skip


def add_profile_arguments(parser: argparse.ArgumentParser, override_fields: tuple[str, ...] = PROFILE_OVERRIDES) -> None:
    """`--profile` and one `--<field>` per overridable `ProfileConfig` field."""
    parser.add_argument(
        "--profile", choices=PROFILES, default=None,
        help="model profile (default: env MAGICID_PROFILE; else hub where its weights are cached, else mini)",
    )  # fmt: skip
    for field in override_fields:
        option = "--" + field.replace("_", "-")
        parser.add_argument(option, default=None, help=f"override the profile's {field} (env MAGICID_{field.upper()})")


def add_identity_arguments(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--id", action="append", required=True, metavar="PHOTO[,PHOTO...]", dest="ids",
        help=f"photos of one person ({what}); repeat --id for each person",
    )  # fmt: skip
    parser.add_argument("--name", action="append", default=[], help="a name per --id, in order (for messages)")


def engine_from_args(args: argparse.Namespace, override_fields: tuple[str, ...] = PROFILE_OVERRIDES):
    """The engine for `--profile` and the overrides; says on stderr when outputs come from the miniature model."""
    from magicid.config import ProfileConfig
    from magicid.engine import MagicID
    from magicid.errors import InvalidSettingError

    overrides = {field: getattr(args, field) for field in override_fields}
    try:
        profile = ProfileConfig.from_env(args.profile, **overrides)
    except ValueError as error:
        raise InvalidSettingError(str(error)) from error
    from magicid.profiles import resolve_device, resolve_dtype

    resolve_device(profile), resolve_dtype(profile)  # refuse a bad --device / --dtype before anything loads
    engine = MagicID.from_profile(profile)
    if engine.is_miniature:
        from magicid.profiles import TINY_CLI_ADVICE

        print(f"notice: {engine.banner()} {TINY_CLI_ADVICE}", file=sys.stderr)
    return engine


def encode_identities(engine, args: argparse.Namespace, default_name=lambda index: "") -> list:
    """One `Identity` per `--id` (its comma-separated photos), named by `--name` in order."""
    names = args.name + [""] * (len(args.ids) - len(args.name))
    return [
        engine.encode_identity(photo_list(spec), name=name or default_name(index))
        for index, (spec, name) in enumerate(zip(args.ids, names))
    ]


def photo_list(spec: str) -> list[str]:
    """The photos of one `--id`: the spec itself when it names a file (commas in file names), else its
    comma-separated parts."""
    if Path(spec).is_file():
        return [spec]
    return [part for part in (piece.strip() for piece in spec.split(",")) if part]


def save_debug_images(directory: Path, images) -> None:
    """Each (image, caption) as `NN-caption.png` in `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    for index, (image, caption) in enumerate(images):
        slug = "".join(c if c.isalnum() else "-" for c in caption.lower()).strip("-")[:48]
        image.save(directory / f"{index:02d}-{slug}.png")
