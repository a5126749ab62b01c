"""Example models, their datasets and training.

``collab.models.datasets`` and ``collab.models.registry`` are numpy-only (usable on the
inference path); ``collab.models.examples`` and ``collab.models.train`` import torch.
"""
