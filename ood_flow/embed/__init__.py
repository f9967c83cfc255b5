"""Embed images with a pretrained CNN, so flows see semantic features instead of pixels.

Kirichenko et al. (NeurIPS 2020, Section 8) show that flows trained on the
features of a pretrained network detect OOD data where flows on pixels fail.
:func:`embed_source` embeds a SOURCE into a features file (``oodflow embed``).

Example:
    >>> import torch
    >>> from ood_flow.embed import create_backbone, embed_images
    >>> model = create_backbone("resnet18", pretrained=False)
    >>> embed_images(model, torch.zeros(2, 3, 32, 32, dtype=torch.uint8)).shape
    (2, 512)
"""

from ood_flow.embed.backbones import BACKBONES, backbone_config, create_backbone
from ood_flow.embed.extract import Embedded, ImageTransform, embed_batches, embed_images, embed_stream, transform_for
from ood_flow.embed.run import EmbedResult, embed_source, list_backbones

__all__ = ["BACKBONES", "EmbedResult", "Embedded", "ImageTransform", "backbone_config", "create_backbone",
           "embed_batches", "embed_images", "embed_source", "embed_stream", "list_backbones", "transform_for"]
