"""A bundle's decision profile as stored on disk: the manifest's profiled timings plus
its codec calibration table. Reading files is kept out of :mod:`collab.decision`, whose
functions stay pure."""

from __future__ import annotations

from collab.bundle import Bundle
from collab.codec.calibrate import load_calibration
from collab.decision import Profile, profile_from_manifest


def profile_from_bundle(bundle: Bundle) -> Profile:
    """The bundle's profile with its validated codec calibration table (if any)."""
    return profile_from_manifest(bundle.manifest, load_calibration(bundle))
