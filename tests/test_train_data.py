"""IDZoom data engine on real photos: records with six modalities, filters with reasons, shards that resume."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter

from train.build_dataset import BuildConfig, build_dataset, main
from train.idzoom import ShardWriter, finished_sources, iter_records, read_dataset, shard_paths


PHOTOS = {  # name in the test folder -> testdata path
    "portraits/obama.jpg": "portraits/barack_obama/1.jpg",
    "portraits/biden.jpg": "portraits/joe_biden/2.jpg",
    "group/couple.jpg": "group/voc_couple.jpg",
    "fullbody/skier.jpg": "pose/skier.jpg",  # a whole body, face of ~30 px
    "fullbody/truck.jpg": "fullbody/man_by_truck.jpg",  # one small, soft face
}


@pytest.fixture(scope="module")
def photos_dir(tmp_path_factory, testdata) -> Path:
    """A small photo folder: portraits, full-body shots, a group photo, a blurred portrait, a tiny image, a broken file."""
    directory = tmp_path_factory.mktemp("photos")
    for name, source in PHOTOS.items():
        (directory / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(testdata / source, directory / name)
    portrait = Image.open(testdata / "portraits" / "barack_obama" / "1.jpg").convert("RGB")
    portrait.filter(ImageFilter.GaussianBlur(12)).save(directory / "portraits" / "blurred.jpg")
    portrait.resize((120, 150)).save(directory / "small.jpg")
    portrait.resize((portrait.width * 9 // 10, portrait.height * 9 // 10)).save(directory / "portraits" / "resaved.jpg", quality=70)
    (directory / "broken.jpg").write_bytes(b"not a jpeg")
    (directory / "portraits" / "obama.txt").write_text("the president in the oval office")
    (directory / "captions.jsonl").write_text(json.dumps({"file": "portraits/biden.jpg", "caption": "a man"}) + "\n")
    return directory


@pytest.fixture(scope="module")
def built(photos_dir, tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("idzoom")
    summary = build_dataset(photos_dir, out_dir, BuildConfig(records_per_shard=1, embedder="dlib"))
    return summary, out_dir


def test_portraits_become_records_with_six_modalities(built):
    _, out_dir = built
    records = {record.source: record for record in read_dataset(out_dir)}
    assert set(records) == {"portraits/obama.jpg", "portraits/biden.jpg", "fullbody/skier.jpg"}
    for record in records.values():
        width, height = record.image.size
        assert record.skeleton.size == record.landmarks_image.size == (width, height)
        assert record.mask.shape == (height, width) and 0.0 <= record.mask.min() < record.mask.max() <= 1.0
        assert record.face.size == (224, 224)
        assert np.asarray(record.skeleton).max() > 0 and np.asarray(record.landmarks_image).max() > 0
        assert record.keypoints.shape == (18, 3) and all(record.keypoints[j, 2] > 0 for j in (0, 1, 2, 5))
        assert len(record.landmarks) >= 68
        x0, y0, x1, y1 = record.face_box
        assert record.mask[int((y0 + y1) / 2), int((x0 + x1) / 2)] > 0.5  # the mask covers the face centre
        assert record.embedding.shape == (128,) and np.linalg.norm(record.embedding) == pytest.approx(1.0, abs=1e-4)
        assert record.embedder == "dlib"
    assert records["portraits/obama.jpg"].caption == "the president in the oval office"  # <photo>.txt sidecar
    assert records["portraits/biden.jpg"].caption == "a man"  # captions.jsonl


def test_filters_drop_with_reasons(built):
    summary, out_dir = built
    report = json.loads((out_dir / "report.json").read_text())
    reasons = {item["source"]: item for item in report["items"] if item["status"] == "dropped"}
    assert reasons["group/couple.jpg"]["code"] == "multiple_faces"
    assert "more than one face" in reasons["group/couple.jpg"]["reason"]
    assert reasons["small.jpg"]["code"] == "low_resolution"
    assert reasons["broken.jpg"]["code"] == "unreadable"
    assert reasons["portraits/blurred.jpg"]["code"] in ("blurry", "no_face")
    assert reasons["fullbody/truck.jpg"]["code"] == "blurry"
    assert reasons["portraits/resaved.jpg"] == {
        "source": "portraits/resaved.jpg", "status": "dropped", "code": "duplicate",
        "reason": "near-duplicate of portraits/obama.jpg"}  # fmt: skip
    assert all(item["reason"] for item in reasons.values())
    assert summary == {"kept": 3, "landmark_only": 0, "dropped": 6, "dropped_by_reason": report["dropped_by_reason"]}


def test_shards_stream_and_split_between_consumers(built):
    _, out_dir = built
    paths = shard_paths(out_dir)
    assert len(paths) == 3 and not list(out_dir.glob("*.partial"))  # one record per shard
    everything = sorted(record.key for record in iter_records(paths))
    by_shard = [[r.key for r in iter_records(paths, consumer=c, num_consumers=2)] for c in range(2)]
    assert [len(keys) for keys in by_shard] == [2, 1] and sorted(sum(by_shard, [])) == everything
    by_record = [[r.key for r in iter_records(paths, consumer=c, num_consumers=4)] for c in range(4)]
    assert [len(keys) for keys in by_record] == [1, 1, 1, 0]  # more consumers than shards: split by record
    assert sorted(sum(by_record, [])) == everything


def test_resume_skips_finished_and_dropped_photos(built, photos_dir, tmp_path):
    _, out_dir = built
    resumed = tmp_path / "resumed"
    shutil.copytree(out_dir, resumed)
    (resumed / "shard-000002.tar").rename(resumed / "shard-000002.tar.partial")  # an interrupted build
    (resumed / "shard-000002.json").unlink()
    lost = set(finished_sources(out_dir)) - set(finished_sources(resumed))
    assert len(lost) == 1
    summary = build_dataset(photos_dir, resumed, BuildConfig(records_per_shard=1, embedder="dlib"))
    assert summary["kept"] == 3 and summary["dropped"] == 6
    assert finished_sources(resumed) == finished_sources(out_dir)
    assert len(shard_paths(resumed)) == 3 and not list(resumed.glob("*.partial"))


def test_shard_writer_keeps_only_complete_shards(tmp_path, built):
    _, out_dir = built
    record = read_dataset(out_dir)[0]
    with pytest.raises(RuntimeError):
        with ShardWriter(tmp_path, records_per_shard=5) as writer:
            writer.write(record)
            raise RuntimeError("interrupted")
    assert shard_paths(tmp_path) == [] and list(tmp_path.glob("*.partial"))
    ShardWriter(tmp_path).close()  # reopening discards the partial shard
    assert not list(tmp_path.glob("*.partial"))


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["--images", str(tmp_path / "missing"), "--out", str(tmp_path / "out")]) == 2
    assert "is not a folder" in capsys.readouterr().err


@pytest.fixture(scope="module")
def embedder():
    from magicid.perception import get_face_embedder

    return get_face_embedder("dlib")


def rejection(photo: Path, embedder, config: BuildConfig | None = None):
    from train.build_dataset import Rejected, make_record

    with pytest.raises(Rejected) as rejected:
        make_record(photo, photo.name, "a person", config or BuildConfig(embedder="dlib"), embedder)
    return rejected.value


CLOSE_UP = "portraits/barack_obama/3.jpg"  # no shoulders in the frame


def test_a_close_up_without_shoulders_becomes_a_landmark_only_record(testdata, embedder):
    from train.build_dataset import make_record

    record = make_record(testdata / CLOSE_UP, "close_up.jpg", "a man", BuildConfig(embedder="dlib"), embedder)
    assert record.extra["conditions"] == "landmarks" and not record.keypoints.any()
    assert np.asarray(record.skeleton).max() == 0 and np.asarray(record.landmarks_image).max() > 0
    dropped = rejection(testdata / CLOSE_UP, embedder, BuildConfig(embedder="dlib", keep_landmark_only=False))
    assert dropped.code == "skeleton" and "shoulder" in str(dropped)


def test_landmark_only_records_show_their_landmarks_in_every_stage(testdata, embedder):
    import torch
    from transformers import CLIPImageProcessor

    from magicid.tiny import tiny_tokenizer
    from train.build_dataset import make_record
    from train.dataset import condition_images, training_example

    config = BuildConfig(embedder="dlib")
    records = [make_record(testdata / path, path, "a person", config, embedder)
               for path in (CLOSE_UP, "portraits/barack_obama/1.jpg")]  # fmt: skip
    examples = [training_example(record, 64, tiny_tokenizer(), CLIPImageProcessor(), False) for record in records]
    batch = {key: torch.stack([example[key] for example in examples]) for key in examples[0]}
    assert batch["has_skeleton"].tolist() == [False, True]
    generator = torch.Generator().manual_seed(0)
    for condition in ("landmarks", "skeleton", "all"):
        assert torch.equal(condition_images(batch, condition, generator)[0], batch["landmarks"][0])
    assert torch.equal(condition_images(batch, "skeleton", generator)[1], batch["skeleton"][1])


def test_min_side_can_be_set_per_source(testdata, embedder, tmp_path):
    from train.build_dataset import parse_args

    small = tmp_path / "small.jpg"
    Image.open(testdata / "portraits" / "barack_obama" / "1.jpg").convert("RGB").resize((200, 250)).save(small)
    config = BuildConfig(embedder="dlib", min_side=256, min_side_by_source={"celeba/": 128, "celeba/hq/": 512})
    assert (config.min_side_for("celeba/a.jpg"), config.min_side_for("celeba/hq/a.jpg"), config.min_side_for("x.jpg")) == (128, 512, 256)
    assert rejection(small, embedder, config).code == "low_resolution"  # "small.jpg" is under no prefix
    from train.build_dataset import make_record

    assert make_record(small, "celeba/small.jpg", "a man", config, embedder).image.size == (200, 250)
    args = parse_args(["--images", "in", "--out", "out", "--min-side-for", "celeba/=128", "--no-keep-landmark-only"])
    assert args.min_side_by_source == {"celeba/": 128} and args.keep_landmark_only is False


@pytest.mark.parametrize(("shift", "keep", "message"), [(0.0, 30, "only 30 face landmarks"), (3.0, None, "off the face")])
def test_face_landmarks_too_few_or_off_the_face_are_dropped(testdata, embedder, monkeypatch, shift, keep, message):
    from magicid import perception

    landmarks = perception.face_landmarks

    def corrupted(image, face, *args, **kwargs):
        points = landmarks(image, face, *args, **kwargs)[:keep]
        return points + shift * face.size

    monkeypatch.setattr(perception, "face_landmarks", corrupted)
    dropped = rejection(testdata / "portraits" / "barack_obama" / "1.jpg", embedder)
    assert dropped.code == "landmarks" and message in str(dropped)


def test_reframing_moves_the_face_and_its_condition_together(built):
    """Aligned crops have one pose; Reframe gives each example its own framing, the same in the photo, its landmark
    image and its face box, and the same framing again when the stream is replayed (a resumed run)."""
    import random

    from transformers import CLIPImageProcessor

    from magicid.tiny import tiny_tokenizer
    from train.dataset import MMFDataset, Reframe, training_example

    _, out_dir = built
    record = next(r for r in read_dataset(out_dir) if r.source == "portraits/obama.jpg")
    reframe = Reframe()
    crops = [reframe.crop(record.image.size, record.face_box, random.Random(seed)) for seed in range(8)]
    assert len(set(crops)) == 8
    width, height = record.image.size
    for x0, y0, x1, y1 in crops:
        assert x1 - x0 == y1 - y0 and 0.74 * min(width, height) <= x1 - x0 <= 1.36 * min(width, height)
        assert x0 >= -0.201 * width and y0 >= -0.201 * height  # mirrored borders, but no mirrored second face
        assert x1 <= 1.201 * width and y1 <= 1.201 * height
    examples = [training_example(record, 64, tiny_tokenizer(), CLIPImageProcessor(), False, crop) for crop in crops[:2]]
    centres = []
    for example in examples:
        x0, y0, x1, y1 = example["face_box"].tolist()
        landmarks = example["landmarks"].amax(0).numpy() > 0
        rows, cols = np.nonzero(landmarks)
        assert x0 - 0.1 <= cols.mean() / 64 <= x1 + 0.1 and y0 - 0.1 <= rows.mean() / 64 <= y1 + 0.1
        centres.append(((x0 + x1) / 2, (y0 + y1) / 2))
    assert np.abs(np.subtract(*centres)).max() > 0.02

    def first_boxes(dataset):
        stream = iter(dataset)
        return [next(stream)["face_box"].tolist() for _ in range(3)]

    make = lambda: MMFDataset(out_dir, 64, tiny_tokenizer(), CLIPImageProcessor(), 0.0, reframe=reframe)  # noqa: E731
    assert first_boxes(make()) == first_boxes(make())
    plain = MMFDataset(out_dir, 64, tiny_tokenizer(), CLIPImageProcessor(), 0.0)
    assert first_boxes(plain) != first_boxes(make())
