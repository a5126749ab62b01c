"""A bundle's decision profile, as the edge client uses it.

The decision engine (collab.decision) is pure; reading the bundle's calibration file
and applying the client's forced codec happen here.
"""

from __future__ import annotations

import dataclasses

from collab.bundle import Bundle
from collab.codec.calibrate import load_calibration
from collab.codec.spec import DEFAULT_CODEC
from collab.decision import Profile, default_codec_stats, profile_from_manifest


def profile_from_bundle(bundle: Bundle, *, images: bool = False) -> Profile:
    """The bundle's profile with its validated codec calibration table (if any);
    ``images``: for requests that come as camera images (their cloud-only path is
    costed with the calibrated image codecs, e.g. JPEG bytes per quality)."""
    return profile_from_manifest(bundle.manifest, load_calibration(bundle), images=images)


def force_codec(profile: Profile, codec: str) -> Profile:
    """Restrict every cloud path to ``codec``; its calibrated stats when the bundle has
    them, else the raw-size estimate (the user forced it, so its accuracy is theirs)."""
    paths = []
    for p in profile.paths:
        if p.uses_cloud:
            row = p.codec_stats.get(codec) or {
                **default_codec_stats(p.raw_bytes)[DEFAULT_CODEC],
                "agreement": 1.0,
            }
            p = dataclasses.replace(p, codec_stats={codec: row})
        paths.append(p)
    return dataclasses.replace(profile, paths=tuple(paths))
