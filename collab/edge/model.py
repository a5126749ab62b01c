"""One loaded bundle version: its runtime, profile and cloud identity, swapped as one."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from collab.bundle import Bundle, load_bundle
from collab.codec import image as images
from collab.decision import PathSpec, Profile
from collab.edge.config import ClientConfig
from collab.edge.profile import force_codec, profile_from_bundle
from collab.edge.runtime import EdgeRuntime, Warmer
from collab.edge.tiers import Device
from collab.errors import ConfigError
from collab.proto import collab_pb2


@dataclass
class LoadedModel:
    """Everything tied to one bundle version; the client swaps it as one reference, so a
    request that took it finishes on it."""

    bundle: Bundle
    runtime: EdgeRuntime
    profile: Profile
    image_profile: Profile  # for requests that come as camera images (infer_image)
    model_id: collab_pb2.ModelId
    served: bool = True  # the cloud serves this version (from probes / call errors)
    specs: dict[str, PathSpec] = field(default_factory=dict)
    warmer: Warmer | None = None  # not started yet when load_model returns

    def __post_init__(self) -> None:
        self.specs = {p.key: p for p in self.profile.paths}

    def check_input(self, x: np.ndarray) -> tuple[np.ndarray, bool]:
        """``x`` as a C-contiguous float32 batch, and whether it came without the batch dim."""
        m = self.bundle.manifest
        if (
            type(x) is np.ndarray
            and x.dtype == np.float32
            and x.shape[1:] == m.input_shape[1:]
            and x.ndim == len(m.input_shape)
            and x.shape[0] >= 1
            and x.flags.c_contiguous
        ):
            return x, False  # the common case, checked cheaply
        arr = np.asarray(x)
        if arr.dtype.kind not in "fiub":
            raise ConfigError(f"input must be numeric, got dtype {arr.dtype}")
        want = tuple(m.input_shape[1:])
        unbatched = arr.shape == want
        if unbatched:
            arr = arr[None]
        if tuple(arr.shape[1:]) != want or arr.shape[0] < 1:
            raise ConfigError(
                f"input shape {list(np.shape(x))} does not match the model input "
                f"{list(m.input_shape)} (batch first, or one sample without the batch dim)"
            )
        return np.ascontiguousarray(arr, dtype=np.float32), unbatched

    def check_image(self, img: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
        """A camera image (uint8 (H, W, 3) or a batch) as (the pixels resized to the
        bundle's preprocessing size, the model input, whether it came unbatched).
        ConfigError for a bundle without preprocessing or a non-RGB-uint8 image."""
        pre = self.bundle.manifest.preprocessing
        if pre is None:
            raise ConfigError(
                f"bundle {self.bundle.name} records no image preprocessing; split it with "
                "--mean/--std, or pass the model input to infer()"
            )
        pixels, single = images.check_images(img)
        pixels = images.resize(pixels, pre.size)
        return pixels, images.normalize(pixels, pre.mean, pre.std), single


def load_model(
    source: str | os.PathLike[str] | Bundle, cfg: ClientConfig, device: Device | None = None
) -> LoadedModel:
    """Verify the bundle and load its full model, so edge-only works at once; with
    ``cfg.warm`` the rest gets a :class:`Warmer` for the caller to start. ``device``: the
    emulated device tier its runtime runs on (collab.edge.tiers)."""
    bundle = source if isinstance(source, Bundle) else load_bundle(Path(source), keep_segments=True)
    rt = EdgeRuntime(bundle, intra_threads=cfg.intra_threads, slowdown=cfg.slowdown, device=device)
    rt.load(
        list(bundle.manifest.full_paths())
    )  # edge-only works at once; the Warmer runs these first
    profile, image_profile = profile_from_bundle(bundle), profile_from_bundle(bundle, images=True)
    if cfg.codec is not None:
        profile, image_profile = (
            force_codec(profile, cfg.codec),
            force_codec(image_profile, cfg.codec),
        )
    return LoadedModel(
        bundle=bundle,
        runtime=rt,
        profile=profile,
        image_profile=image_profile,
        model_id=collab_pb2.ModelId(name=bundle.manifest.model_name, version=bundle.version),
        warmer=Warmer(rt) if cfg.warm else None,
    )
