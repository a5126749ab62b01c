"""Camera images end to end: ``Client.infer_image`` on every path, and the cloud-only
image path against a real ``collab cloud`` process — the answer is exactly the full
model on the decoded image, and bad images are INVALID_ARGUMENT while the node keeps
serving."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pytest
from PIL import Image
from test_cloud_support import full_output, model_id, stub, wait_ready
from test_image_codec import PRE, image_bundle

from collab import Client, codec
from collab.bundle import Bundle, load_bundle
from collab.codec.calibrate import calibrate_bundle
from collab.codec.image import decode_image, encode_image, preprocess
from collab.errors import ConfigError
from collab.models.images import natural_images
from collab.procs import collab_process, free_port
from collab.proto import collab_pb2, collab_pb2_grpc

IMAGE_CODECS = ["jpeg:50", "jpeg:90", "png"]


@dataclass(frozen=True)
class Node:
    addr: str
    bundle: Bundle
    stub: collab_pb2_grpc.CloudServiceStub


def calibrated(root: Path, images: np.ndarray) -> Bundle:
    """``root`` with a calibration whose image section lists ``IMAGE_CODECS``."""
    pre = load_bundle(root).manifest.preprocessing
    assert pre is not None
    calibrate_bundle(
        root,
        preprocess(images, pre),
        codecs=["f32+zstd1"],
        progress=False,
        images=images,
        image_codecs=IMAGE_CODECS,
    )
    return load_bundle(root)


@contextlib.contextmanager
def cloud_node(bundle: Bundle, log: Path) -> Iterator[Node]:
    port = free_port()
    args = [
        "cloud",
        "--bundle",
        str(bundle.root),
        "--listen",
        f"127.0.0.1:{port}",
        "--max-batch-size",
        "4",
        "--max-wait-ms",
        "1",
    ]
    with collab_process(args, port=port, log=log) as proc:
        ch, st = stub(f"127.0.0.1:{port}", max_message_bytes=64 << 20)
        wait_ready(ch)
        yield Node(f"127.0.0.1:{port}", bundle, st)
        ch.close()
        assert proc.poll() is None, f"cloud node died; log:\n{log.read_text()[-3000:]}"


@pytest.fixture(scope="module")
def node(resnet_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    tmp = tmp_path_factory.mktemp("imgcloud")
    b = calibrated(
        image_bundle(resnet_bundle, tmp / "bundle"), natural_images("train", 24, size=32)
    )
    with cloud_node(b, tmp / "cloud.log") as n:
        yield n


def _infer(node: Node, images: list[bytes], **kw: object) -> collab_pb2.InferResponse:
    return node.stub.Infer(
        collab_pb2.InferRequest(model=model_id(node.bundle), images=images, **kw), timeout=30
    )


def test_cloud_answers_exactly_the_full_model_on_the_decoded_image(node: Node) -> None:
    imgs = natural_images("test", 3, size=32)
    for name in IMAGE_CODECS:
        files = [encode_image(img, name) for img in imgs]
        got = codec.decode(_infer(node, files).output)
        local = np.stack([decode_image(f, max_pixels=32 * 32) for f in files])
        np.testing.assert_allclose(
            got, full_output(node.bundle, preprocess(local, PRE)), rtol=0, atol=1e-5
        )
    # a larger camera image is resized on the node exactly as the edge resizes it
    big = natural_images("test", 1, size=48)
    got = codec.decode(_infer(node, [encode_image(big[0], "png")]).output)
    np.testing.assert_allclose(
        got, full_output(node.bundle, preprocess(big, PRE)), rtol=0, atol=1e-5
    )


def test_bad_images_are_invalid_argument_and_the_node_keeps_serving(node: Node) -> None:
    good = encode_image(natural_images("test", 1, size=32)[0], "jpeg:90")
    ok = codec.decode(_infer(node, [good]).output)
    too_big = encode_image(
        np.zeros((32 * 5, 32 * 5, 3), np.uint8), "png"
    )  # 25x the pixels, cap 16x
    buf = io.BytesIO()
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(buf, format="PNG")
    gray = buf.getvalue()  # a valid image, but not RGB
    cases = [
        ([b"\xff\xd8\xff\xe0 not a jpeg"], {}, grpc.StatusCode.INVALID_ARGUMENT),
        ([good[: len(good) // 2]], {}, grpc.StatusCode.INVALID_ARGUMENT),  # truncated JPEG
        ([too_big], {}, grpc.StatusCode.INVALID_ARGUMENT),
        ([good, b"garbage"], {}, grpc.StatusCode.INVALID_ARGUMENT),
        ([gray], {}, grpc.StatusCode.INVALID_ARGUMENT),
        (
            [good],
            {"frame": codec.encode(np.zeros((1, 3, 32, 32), np.float32), "f32")},
            grpc.StatusCode.INVALID_ARGUMENT,
        ),  # both a frame and images
        ([good] * 5, {}, grpc.StatusCode.RESOURCE_EXHAUSTED),  # more than --max-batch-size
    ]
    for files, kw, code in cases:
        with pytest.raises(grpc.RpcError) as e:
            _infer(node, files, **kw)
        assert e.value.code() == code, (e.value.code(), e.value.details())
        np.testing.assert_array_equal(
            codec.decode(_infer(node, [good]).output), ok
        )  # still serving


def test_a_bundle_without_preprocessing_refuses_images(resnet_bundle: Path, tmp_path: Path) -> None:
    b = load_bundle(resnet_bundle)
    with cloud_node(b, tmp_path / "cloud.log") as n:
        with pytest.raises(grpc.RpcError) as e:
            _infer(n, [encode_image(natural_images("test", 1, size=32)[0], "png")])
        assert (
            e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            and "preprocessing" in e.value.details()
        )
        with (
            Client(resnet_bundle, warm=False, initial_probe=False) as c,
            pytest.raises(ConfigError, match="preprocessing"),
        ):
            c.infer_image(natural_images("test", 1, size=32)[0])


def test_client_sends_the_image_with_the_quality_the_policy_picks(node: Node) -> None:
    imgs = natural_images("test", 2, size=40)  # resized to 32x32 on the edge first
    small = preprocess(imgs, PRE)
    with Client(node.bundle.root, cloud=[node.addr], accuracy_budget=1.0, warm=False) as c:
        planned = c.explain("cloud_only", image=True)["candidates"][0]
        assert planned["codec"] in IMAGE_CODECS and planned["bytes"] < 3 * 32 * 32, planned
        assert c.explain("cloud_only")["candidates"][0]["codec"] == "f32+zstd1"  # a tensor request
        r = c.infer_image(imgs, policy="cloud_only")
        assert r.path == "cloud_only" and not r.fell_back and r.codec in IMAGE_CODECS, r
        from collab.codec.image import resize

        files = [encode_image(img, r.codec) for img in resize(imgs, PRE.size)]
        assert r.bytes_sent == sum(map(len, files))
        local = np.stack([decode_image(f, max_pixels=32 * 32) for f in files])
        np.testing.assert_allclose(
            r.output, full_output(node.bundle, preprocess(local, PRE)), rtol=0, atol=1e-5
        )
        # the other paths run the preprocessed input on the edge, single images unbatched
        e = c.infer_image(imgs[0], policy="edge_only")
        np.testing.assert_allclose(
            e.output, full_output(node.bundle, small[:1])[0], rtol=0, atol=1e-5
        )
        sp = node.bundle.manifest.split_points[3].name
        s = c.infer_image(imgs, policy=f"split:{sp}")
        assert s.path == "split" and not s.fell_back and s.codec is not None and ":" not in s.codec
        for bad in (imgs.astype(np.float32), imgs[..., :2], imgs[0, :, :, 0]):
            with pytest.raises(ConfigError):
                c.infer_image(bad)
        # a tensor request still goes as a tensor frame
        t = c.infer(small, policy="cloud_only")
        assert t.codec == "f32+zstd1" and not t.fell_back
    with Client(node.bundle.root, cloud=[node.addr], accuracy_budget=0.0, warm=False) as c:
        r = c.infer_image(
            imgs, policy="cloud_only"
        )  # only agreement-1 rows (png at least) are allowed
        cal = node.bundle.calibration()
        assert cal is not None and cal["image"][r.codec]["agreement"] == 1.0, r.codec


@pytest.mark.slow
def test_efficientnet_jpeg_cloud_only_is_exactly_the_full_model(tmp_path: Path) -> None:
    """The real model: ``collab split`` of the example factory records its preprocessing,
    and a JPEG cloud-only answer equals the full model on the decoded JPEG."""
    from collab.cli import main
    from collab.models.registry import LITE0_PREPROCESSING

    out = tmp_path / "eff"
    assert (
        main(
            [
                "split",
                "collab.models.examples:efficientnet_lite0",
                "--input-shape",
                "1,3,224,224",
                "--out",
                str(out),
                "--runs",
                "2",
                "--no-progress",
            ]
        )
        == 0
    )
    b = load_bundle(out)
    assert b.manifest.preprocessing == LITE0_PREPROCESSING
    b = calibrated(out, natural_images("train", 8))
    imgs = natural_images("test", 2)
    with (
        cloud_node(b, tmp_path / "cloud.log") as n,
        Client(out, cloud=[n.addr], accuracy_budget=1.0, warm=False) as c,
    ):
        r = c.infer_image(imgs, policy="cloud_only")
        assert r.codec is not None and r.codec.startswith("jpeg:") and not r.fell_back, r
        local = np.stack(
            [decode_image(encode_image(img, r.codec), max_pixels=224 * 224) for img in imgs]
        )
        np.testing.assert_allclose(
            r.output, full_output(b, preprocess(local, LITE0_PREPROCESSING)), rtol=0, atol=1e-5
        )
