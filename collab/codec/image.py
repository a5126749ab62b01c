"""Image codecs for the cloud-only path: the raw uint8 camera image as JPEG, PNG or WebP.

A camera produces uint8 RGB pixels; compressing those (what every camera pipeline does)
costs far fewer bytes than any codec on the normalised float32 model input. The cloud
decodes the image and applies the bundle's :class:`~collab.bundle.Preprocessing` itself,
with the same functions the edge uses (:func:`preprocess`), so a cloud-only answer is
exactly the full model's output on the decoded image.

Wire choice: an encoded image travels as its own file bytes in
``InferRequest.images``, not inside a codec frame. JPEG, PNG and WebP are already
self-describing (magic, dimensions, colour type in the header), so a frame around
them would only repeat that, and it would give the frame a second meaning (a tensor
frame decodes to the tensor the model runs; an image needs the bundle's
preprocessing, which only the receiving node has). The frame's guarantee — every
length is checked before anything is allocated — holds here too: :func:`decode_image`
opens only the header (Pillow reads pixels lazily), checks the format and the pixel
count against a cap, and only then decodes, so a decompression bomb costs a header
parse. Names: ``jpeg:Q`` (Q 1..100), ``webp:Q`` (Q 1..100, if Pillow has WebP) and
``png`` (lossless), strict and canonical like feature codec names. Pillow is imported
only when an image is encoded or decoded: parsing names (calibration tables, the
policy) needs nothing beyond numpy.
"""

from __future__ import annotations

import functools
import io
import re
from collections.abc import Sequence
from dataclasses import dataclass
from types import ModuleType

import numpy as np

from collab.bundle import Preprocessing
from collab.errors import CodecError, ConfigError
from collab.extras import missing

FORMATS = {"jpeg": "JPEG", "png": "PNG", "webp": "WEBP"}  # codec kind -> Pillow format
DEFAULT_IMAGE_CODECS: tuple[str, ...] = ("jpeg:50", "jpeg:75", "jpeg:90", "jpeg:95", "png")
_NAME_RE = re.compile(r"^(jpeg|webp):([1-9]\d{0,2})$")


@dataclass(frozen=True)
class ImageCodec:
    """One way of turning a uint8 RGB image into file bytes."""

    kind: str  # jpeg | png | webp
    quality: int | None = None  # jpeg/webp only

    def __post_init__(self) -> None:
        if self.kind not in FORMATS:
            raise CodecError(f"unknown image codec {self.kind!r} (known: jpeg:Q, webp:Q, png)")
        if (self.kind == "png") != (self.quality is None):
            raise CodecError(
                f"{self.kind}: quality {'is required' if self.quality is None else 'does not apply'}"
            )
        if self.quality is not None and not 1 <= self.quality <= 100:
            raise CodecError(f"{self.kind} quality {self.quality} outside [1, 100]")

    @property
    def name(self) -> str:
        return self.kind if self.quality is None else f"{self.kind}:{self.quality}"

    @property
    def lossless(self) -> bool:
        """Pixel-exact round trip: the cloud builds the same model input as the edge."""
        return self.kind == "png"

    @classmethod
    def parse(cls, name: str | ImageCodec) -> ImageCodec:
        if isinstance(name, ImageCodec):
            return name
        if not isinstance(name, str):
            raise CodecError(f"image codec name must be a string, got {type(name).__name__}")
        if name == "png":
            return cls("png")
        m = _NAME_RE.match(name)
        if m is None:
            raise CodecError(
                f"bad image codec name {name!r}: expected jpeg:Q, webp:Q (Q 1..100) or png"
            )
        codec = cls(m.group(1), int(m.group(2)))
        if codec.name != name:
            raise CodecError(f"bad image codec name {name!r} (canonical form: {codec.name!r})")
        return codec

    def __str__(self) -> str:
        return self.name


def is_image_codec(name: str) -> bool:
    """Whether ``name`` is in the image codec grammar (it may still be invalid)."""
    return name == "png" or name.startswith(("jpeg:", "webp:"))


def _pil() -> ModuleType:
    try:
        from PIL import Image
    except ImportError as e:
        raise missing(e, "image codecs (jpeg/png/webp)") from e
    return Image


@functools.cache
def webp_available() -> bool:
    """Pillow was built with WebP (the wheels are; a distro build may not be)."""
    try:
        from PIL import features
    except ImportError:
        return False
    return bool(features.check("webp"))


def check_images(images: object) -> tuple[np.ndarray, bool]:
    """``images`` as a C-contiguous uint8 (N, H, W, 3) batch, and whether it came as one
    (H, W, 3) image. ConfigError for anything else (a float array, a grayscale or RGBA
    image): the caller's mistake, named, never a crash further down."""
    arr = np.asarray(images)
    given = list(arr.shape)
    if arr.dtype != np.uint8:
        raise ConfigError(f"an image must be uint8 RGB pixels, got dtype {arr.dtype}")
    single = arr.ndim == 3
    if single:
        arr = arr[None]
    if arr.ndim != 4 or arr.shape[-1] != 3 or 0 in arr.shape:
        raise ConfigError(
            f"an image must be (H, W, 3) RGB, or a batch (N, H, W, 3); got shape {given}"
        )
    return np.ascontiguousarray(arr), single


def resize(images: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 (N, H, W, 3) resized to ``size`` (H, W) with Pillow's bilinear filter; the
    same array back when it already has that size."""
    if images.shape[1:3] == tuple(size):
        return images
    image = _pil()
    h, w = size
    out = np.empty((len(images), h, w, 3), np.uint8)
    for i, img in enumerate(images):
        out[i] = np.asarray(image.fromarray(img).resize((w, h), image.Resampling.BILINEAR))
    return out


def normalize(images: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """uint8 NHWC RGB -> float32 NCHW model input: (x / 255 - mean) / std per channel."""
    x = np.asarray(images, np.float32) / np.float32(255.0)
    y = (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(y.transpose(0, 3, 1, 2), dtype=np.float32)


def preprocess(images: np.ndarray, pre: Preprocessing) -> np.ndarray:
    """A checked uint8 (N, H, W, 3) batch -> the model input of a bundle (resized when
    its size differs, then normalised)."""
    return normalize(resize(images, pre.size), pre.mean, pre.std)


def encode_image(image: np.ndarray, codec: str | ImageCodec) -> bytes:
    """One uint8 (H, W, 3) image as the file bytes of ``codec``."""
    c = ImageCodec.parse(codec)
    if c.kind == "webp" and not webp_available():
        raise CodecError("this Pillow has no WebP support")
    arr, single = check_images(image)
    if not single:
        raise ConfigError(f"encode_image takes one (H, W, 3) image, got shape {list(image.shape)}")
    buf = io.BytesIO()
    opts: dict[str, object] = {"quality": c.quality} if c.quality is not None else {}
    if c.kind == "png":
        opts["compress_level"] = 6
    _pil().fromarray(arr[0]).save(buf, format=FORMATS[c.kind], **opts)
    return buf.getvalue()


def decode_image(data: bytes, *, max_pixels: int) -> np.ndarray:
    """The uint8 (H, W, 3) RGB pixels of a JPEG/PNG/WebP file. The header is checked
    (format, RGB, at most ``max_pixels``) before the pixels are decoded; anything
    malformed raises CodecError."""
    image = _pil()
    try:
        with image.open(io.BytesIO(data), formats=list(FORMATS.values())) as img:
            w, h = img.size
            if w * h > max_pixels:
                raise CodecError(
                    f"image of {w}x{h} pixels exceeds the limit of {max_pixels} pixels"
                )
            if img.mode != "RGB":
                raise CodecError(f"image mode {img.mode!r}: only RGB images are accepted")
            img.load()
            arr = np.asarray(img)
    except CodecError:
        raise
    except Exception as e:  # Pillow raises OSError, SyntaxError, ValueError, struct errors, ...
        raise CodecError(f"not a valid JPEG/PNG/WebP image: {e}") from None
    if arr.dtype != np.uint8 or arr.shape != (h, w, 3):
        raise CodecError(
            f"decoded image has {arr.dtype}{list(arr.shape)}, expected uint8 [{h}, {w}, 3]"
        )
    return arr
