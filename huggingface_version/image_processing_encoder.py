"""A ViT's image processor: any picture -> the grey 8 x 8 pixels in [0, 1] the digits model was trained on.

`pipeline("image-classification")` hands the processor what it is given (a PIL image, usually RGB) and
feeds the model what comes back. transformers' own ViTImageProcessor resizes, rescales and normalises,
but keeps three colour channels; the digits ViT (utils/data/digits.py) reads one. So this processor
does the three steps the data did, and nothing else:

    grey       convert to PIL's "L" (luminance: 0.299 R + 0.587 G + 0.114 B), one channel
    resize     to image_size x image_size (bilinear; an image of that size is left as it is)
    rescale    0..255 -> [0, 1]; with `grey_levels` (16, the digits' own), also rounded to the nearest
               of its levels 0, 1/16, ..., 1: sklearn's digits have values 0..16 divided by 16, and an
               8-bit picture of one (value * 255 / 16, rounded) must give back exactly those values

It ships with a saved ViT (register_for_auto_class("AutoImageProcessor"): save_pretrained copies this
file next to preprocessor_config.json) and imports only numpy, PIL and transformers.
"""

from __future__ import annotations

import numpy as np
from PIL import Image
from transformers.feature_extraction_utils import BatchFeature
from transformers.image_processing_utils import BaseImageProcessor


class TutorialGreyImageProcessor(BaseImageProcessor):
    """Images -> {"pixel_values": (B, 1, S, S)} grey levels in [0, 1]."""

    model_input_names = ["pixel_values"]  # noqa: RUF012 - transformers' own class attribute

    def __init__(self, image_size: int = 8, grey_levels: int = 16, **kwargs) -> None:
        super().__init__(**kwargs)
        if not isinstance(image_size, int) or isinstance(image_size, bool) or image_size <= 0:
            raise ValueError(f"image_size must be a positive integer, got {image_size!r}")
        if not isinstance(grey_levels, int) or isinstance(grey_levels, bool) or grey_levels < 0:
            raise ValueError(f"grey_levels must be an integer >= 0 (0: no rounding), got {grey_levels!r}")
        self.image_size, self.grey_levels = image_size, grey_levels

    def grey(self, image) -> np.ndarray:
        """One image (PIL, or an (H, W) / (H, W, C) array of 0..255) -> (S, S) float32 in [0, 1]."""
        if not isinstance(image, Image.Image):
            array = np.asarray(image)
            if array.ndim not in (2, 3):
                raise ValueError(f"an image is (H, W) or (H, W, channels), got {array.shape}")
            image = Image.fromarray(array.astype(np.uint8))
        image = image.convert("L")
        side = self.image_size
        if image.size != (side, side):
            image = image.resize((side, side), Image.Resampling.BILINEAR)
        pixels = np.asarray(image, dtype=np.float32) / 255.0
        if self.grey_levels:
            pixels = np.round(pixels * self.grey_levels) / self.grey_levels
        return pixels.astype(np.float32)

    def preprocess(self, images, return_tensors=None, **kwargs) -> BatchFeature:
        """An image or a list of them -> a batch; `return_tensors="pt"` gives a torch tensor."""
        if isinstance(images, (list, tuple)) and not isinstance(images[0], (int, float)):
            batch = [self.grey(image) for image in images]
        else:
            batch = [self.grey(images)]
        pixel_values = np.stack(batch)[:, None]  # (B, 1, S, S)
        return BatchFeature(data={"pixel_values": pixel_values}, tensor_type=return_tensors)
