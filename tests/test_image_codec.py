"""Image codecs (jpeg/png/webp) and bundle preprocessing: names, strict decoding, the
manifest field, ``collab split --mean/--std``, calibration rows and the policy."""

from __future__ import annotations

import io
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from collab.bundle import Preprocessing, load_bundle, update_bundle
from collab.cli import main
from collab.codec.calibrate import load_calibration, measure, validate_calibration
from collab.codec.image import (
    ImageCodec,
    check_images,
    decode_image,
    encode_image,
    normalize,
    preprocess,
    webp_available,
)
from collab.codec.policy import choose_codec
from collab.decision import profile_from_manifest
from collab.errors import BundleError, CodecError, ConfigError
from collab.models.images import natural_images

PRE = Preprocessing(size=(32, 32), mean=(0.5, 0.4, 0.3), std=(0.25, 0.2, 0.3))


def image_bundle(src: Path, dst: Path) -> Path:
    """A copy of a 3x32x32 bundle that records ``PRE`` (an image model)."""
    import shutil

    shutil.copytree(src, dst)
    update_bundle(dst, lambda root, m: replace(m, preprocessing=PRE, calibration=None))
    return dst


def test_names_are_strict_and_canonical() -> None:
    for name in ("jpeg:1", "jpeg:75", "jpeg:100", "webp:80", "png"):
        assert ImageCodec.parse(name).name == name
    assert ImageCodec.parse("png").lossless and not ImageCodec.parse("jpeg:95").lossless
    for bad in ("jpeg", "jpeg:0", "jpeg:101", "jpeg:075", "png:5", "gif", "jpeg:9x", "JPEG:90", ""):
        with pytest.raises(CodecError):
            ImageCodec.parse(bad)


def test_bad_images_are_refused_with_config_error() -> None:
    ok = np.zeros((4, 5, 3), np.uint8)
    assert check_images(ok)[0].shape == (1, 4, 5, 3) and check_images(ok)[1]
    assert check_images(np.zeros((2, 4, 5, 3), np.uint8))[0].shape == (2, 4, 5, 3)
    for bad in (
        ok.astype(np.float32),
        np.zeros((4, 5, 4), np.uint8),
        np.zeros((4, 5), np.uint8),
        np.zeros((0, 5, 3), np.uint8),
        np.zeros((1, 2, 4, 5, 3), np.uint8),
        "an image",
    ):
        with pytest.raises(ConfigError):
            check_images(bad)


def test_png_is_pixel_exact_and_jpeg_close() -> None:
    img = natural_images("test", 1, size=64)[0]
    assert np.array_equal(decode_image(encode_image(img, "png"), max_pixels=64 * 64), img)
    back = decode_image(encode_image(img, "jpeg:90"), max_pixels=64 * 64)
    assert back.shape == img.shape and np.abs(back.astype(int) - img).mean() < 6
    small, large = (len(encode_image(img, f"jpeg:{q}")) for q in (50, 95))
    assert small < large
    if webp_available():
        assert decode_image(encode_image(img, "webp:80"), max_pixels=64 * 64).shape == img.shape


def _png(arr: np.ndarray, mode: str | None = None) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr, mode).save(buf, format="PNG")
    return buf.getvalue()


def test_decoding_checks_the_header_before_the_pixels() -> None:
    jpeg = encode_image(natural_images("test", 1, size=64)[0], "jpeg:90")
    for bad in (
        b"",
        b"\xff\xd8\xff\xe0garbage",
        jpeg[: len(jpeg) // 2],
        b"GIF89a" + jpeg[6:],
        jpeg[:200] + bytes(len(jpeg) - 200),
    ):
        with pytest.raises(CodecError):
            decode_image(bad, max_pixels=64 * 64)
    # a decompression bomb: 6000x6000 zeros compress to a few kB; refused from the header
    bomb = _png(np.zeros((6000, 6000, 3), np.uint8))
    assert len(bomb) < 200_000
    with pytest.raises(CodecError, match="exceeds the limit"):
        decode_image(bomb, max_pixels=224 * 224 * 16)
    with pytest.raises(CodecError, match="only RGB"):
        decode_image(_png(np.zeros((8, 8), np.uint8)), max_pixels=64)
    buf = io.BytesIO()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(buf, format="BMP")
    with pytest.raises(CodecError):  # a format that is not JPEG/PNG/WebP
        decode_image(buf.getvalue(), max_pixels=64)


def test_preprocess_resizes_and_normalises() -> None:
    imgs = natural_images("test", 2, size=48)
    x = preprocess(imgs, PRE)
    assert x.shape == (2, 3, 32, 32) and x.dtype == np.float32
    same = natural_images("test", 2, size=32)
    assert np.array_equal(preprocess(same, PRE), normalize(same, PRE.mean, PRE.std))
    expect = (same[1, 3, 4, 2] / 255.0 - PRE.mean[2]) / PRE.std[2]
    assert abs(float(preprocess(same, PRE)[1, 2, 3, 4]) - expect) < 1e-6


def test_manifest_preprocessing_round_trips_and_must_fit_the_input(
    resnet_bundle: Path, tmp_path: Path
) -> None:
    b = load_bundle(image_bundle(resnet_bundle, tmp_path / "img"))
    assert b.manifest.preprocessing == PRE
    assert json.loads((b.root / "manifest.json").read_text())["preprocessing"]["mean"] == [
        0.5,
        0.4,
        0.3,
    ]
    assert load_bundle(resnet_bundle).manifest.preprocessing is None
    with pytest.raises(BundleError, match="preprocessing makes"):
        update_bundle(b.root, lambda root, m: replace(m, preprocessing=replace(PRE, size=(64, 64))))
    for bad in (
        dict(size=(0, 32)),
        dict(std=(1.0, 0.0, 1.0)),
        dict(mean=(0.5, 0.5)),
        dict(layout="NHWC"),
    ):
        with pytest.raises(BundleError):
            replace(PRE, **bad)  # type: ignore[arg-type]


def test_split_records_mean_and_std(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "b"
    assert (
        main(
            [
                "split",
                "collab.models.examples:resnet18_style",
                "--input-shape",
                "1,3,32,32",
                "--out",
                str(out),
                "--runs",
                "2",
                "--no-progress",
                "--mean",
                "0.5,0.4,0.3",
                "--std",
                "0.25,0.2,0.3",
            ]
        )
        == 0
    )
    assert load_bundle(out).manifest.preprocessing == PRE
    for flags in (
        ["--mean", "0.5,0.4,0.3"],
        ["--mean", "1,2", "--std", "1,1,1"],
        ["--mean", "a,b,c", "--std", "1,1,1"],
    ):
        assert (
            main(
                [
                    "split",
                    "collab.models.examples:resnet18_style",
                    "--input-shape",
                    "1,3,32,32",
                    "--out",
                    str(tmp_path / "x"),
                    "--runs",
                    "1",
                    "--no-progress",
                    *flags,
                ]
            )
            == 1
        )
    assert (
        main(
            [
                "split",
                "collab.models.examples:digits_cnn",
                "--input-shape",
                "1,1,8,8",
                "--out",
                str(tmp_path / "y"),
                "--runs",
                "1",
                "--no-progress",
                "--mean",
                "0.5,0.5,0.5",
                "--std",
                "1,1,1",
            ]
        )
        == 1
    )
    capsys.readouterr()


def test_calibration_lists_image_codecs_and_the_policy_picks_a_quality(
    resnet_bundle: Path, tmp_path: Path
) -> None:
    b = load_bundle(image_bundle(resnet_bundle, tmp_path / "img"))
    imgs = natural_images("test", 24, size=32)
    codecs = ["jpeg:50", "jpeg:90", "png"]
    cal = measure(
        b,
        preprocess(imgs, PRE),
        codecs=["f32+zstd1"],
        progress=False,
        images=imgs,
        image_codecs=codecs,
    )
    assert cal["image_codecs"] == codecs and cal["num_images"] == 24
    rows = cal["image"]
    assert rows["png"]["agreement"] == 1.0 and rows["png"]["rel_l2"] == 0.0
    assert rows["jpeg:50"]["bytes"] < rows["jpeg:90"]["bytes"] < 3 * 32 * 32
    for r in rows.values():
        assert 0 <= r["agreement"] <= 1 and r["ratio"] == pytest.approx(3 * 32 * 32 / r["bytes"])
    validate_calibration(cal, b.manifest)
    with pytest.raises(BundleError):
        validate_calibration({**cal, "image": {"png": rows["png"]}}, b.manifest)
    with pytest.raises(BundleError, match="needs a bundle with preprocessing"):
        validate_calibration(cal, load_bundle(resnet_bundle).manifest)
    # lossless png is always eligible; with room in the budget the smallest file wins
    slow = choose_codec(rows, bandwidth_bps=1e6, accuracy_budget=1.0)
    assert slow.codec == "jpeg:50"
    strict = choose_codec(rows, bandwidth_bps=1e6, accuracy_budget=0.0)
    assert strict.codec in {c for c, r in rows.items() if r["agreement"] == 1.0}
    # the image profile's cloud-only path is costed with the image rows, the tensor one is not
    img_cloud = next(
        p
        for p in profile_from_manifest(b.manifest, cal, images=True).paths
        if p.path == "cloud_only"
    )
    assert set(img_cloud.codec_stats) == set(codecs) and img_cloud.raw_bytes == 3 * 32 * 32
    cloud = next(p for p in profile_from_manifest(b.manifest, cal).paths if p.path == "cloud_only")
    assert set(cloud.codec_stats) == {"f32+zstd1"}


def test_calibrate_cli_measures_images(
    resnet_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = image_bundle(resnet_bundle, tmp_path / "img")
    np.save(
        tmp_path / "imgs.npy", natural_images("test", 12, size=40)
    )  # resized to 32x32 as the edge would
    assert (
        main(
            [
                "calibrate",
                str(root),
                "--images",
                str(tmp_path / "imgs.npy"),
                "--codecs",
                "f32+zstd1",
                "--image-codecs",
                "jpeg:75",
                "png",
                "--no-progress",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "jpeg:75" in out and "png" in out
    cal = load_calibration(load_bundle(root))
    assert cal is not None and set(cal["image"]) == {"jpeg:75", "png"} and cal["num_images"] == 12
    np.save(tmp_path / "f.npy", np.zeros((3, 40, 40, 3), np.float32))
    assert main(["calibrate", str(root), "--images", str(tmp_path / "f.npy"), "--no-progress"]) == 1
    assert (
        main(
            [
                "calibrate",
                str(resnet_bundle),
                "--images",
                str(tmp_path / "imgs.npy"),
                "--no-progress",
            ]
        )
        == 1
    )
    capsys.readouterr()
