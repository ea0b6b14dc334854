"""The 8x8 handwritten digits for the Vision Transformer (`--task digits --arch vit`).

scikit-learn ships them (`sklearn.datasets.load_digits`: 1,797 images of the digits 0-9, 16 grey
levels, from the UCI "optical recognition of handwritten digits" set), so nothing is downloaded.
They are split into train and test by the seed, each class in the same proportion in both, and
scaled to [0, 1]. A ViT cuts each image into (8 / P)^2 patches of P x P pixels (--patch_size)
and reads them as a sentence of that many tokens after [CLS].

A batch has the toolkit's pair layout (utils.data.tasks), with the image as the encoder's source:
    src      (B, 1, 8, 8)  pixels in [0, 1]
    tgt_in   (B, 0)        nothing: an encoder-only model has no target side
    tgt_out  (B,)          the digit
"""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

from utils.runtime.errors import UserError

TEST_FRACTION = 0.2  # 360 of the 1,797 images are held out
IMAGE_SIZE, CHANNELS, GREY_LEVELS = 8, 1, 16
LABELS = tuple("0123456789")


class PatchTokenizer:
    """What a ViT's checkpoint keeps in place of a tokenizer: how an image becomes tokens.

    It has no vocabulary (pixels are read as they are); `tokens` names an image's positions for
    the figures and the --debug trace: [CLS], then each patch by its row and column.
    """

    pad_id = bos_id = eos_id = 0  # no ids: the model config's special ids must still name one
    vocab_size = src_vocab_size = tgt_vocab_size = 1
    specials = ()

    def __init__(self, image_size: int, patch_size: int, channels: int) -> None:
        self.image_size, self.patch_size, self.channels = image_size, patch_size, channels
        side = image_size // patch_size
        self.id_to_token = ["[CLS]", *(f"r{r}c{c}" for r in range(side) for c in range(side))]

    def tokens(self, image=None) -> list[str]:
        """The labels of a ViT's positions: [CLS] r0c0 r0c1 ..."""
        return list(self.id_to_token)

    def check(self, images: torch.Tensor, name: str) -> None:
        want = (self.channels, self.image_size, self.image_size)
        if images.dim() != 4 or tuple(images.shape[1:]) != want:
            raise UserError(f"{name}: images of (channels, height, width) {want} expected, got "
                            f"{tuple(images.shape[1:])}")  # fmt: skip
        if self.image_size % self.patch_size:
            raise UserError(f"{name}: {self.image_size}-pixel images cannot be cut into patches of "
                            f"{self.patch_size} (--patch_size must divide {self.image_size})")  # fmt: skip

    def to_dict(self) -> dict:
        return {"type": "patches", "image_size": self.image_size, "patch_size": self.patch_size,
                "channels": self.channels}  # fmt: skip

    @classmethod
    def from_dict(cls, data: dict) -> PatchTokenizer:
        try:
            return cls(int(data["image_size"]), int(data["patch_size"]), int(data["channels"]))
        except (KeyError, TypeError, ValueError) as err:
            raise UserError(f"not a ViT patch description: {data!r:.80}") from err


def load_digits_split(
    seed: int,
) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """((train images, labels), (test images, labels)): a stratified split by `seed`; images (N, 1, 8, 8)."""
    from sklearn.datasets import load_digits  # the images ship inside scikit-learn
    from sklearn.model_selection import train_test_split

    data = load_digits()
    images = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / GREY_LEVELS
    labels = torch.tensor(data.target, dtype=torch.long)
    train, test = train_test_split(range(len(labels)), test_size=TEST_FRACTION, random_state=seed,
                                   stratify=data.target)  # fmt: skip
    return (images[train], labels[train]), (images[test], labels[test])


class ImageDataset(Dataset):
    """Images (N, C, H, W) and their labels; `shift` moves each training image by up to that many
    pixels (a new draw every time it is read), so the model sees the digit in new places."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, shift: int = 0, seed: int = 0) -> None:
        self.images, self.labels, self.shift = images, labels, shift
        self.generator = torch.Generator().manual_seed(seed)

    @property
    def src_lengths(self) -> list[int]:
        return [1] * len(self.labels)

    tgt_lengths = src_lengths

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        image = self.images[i]
        if self.shift:
            dy, dx = torch.randint(-self.shift, self.shift + 1, (2,), generator=self.generator).tolist()
            image = _blank_wrapped(torch.roll(image, (dy, dx), dims=(1, 2)), dy, dx)
        return image, int(self.labels[i])


def _blank_wrapped(image: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """Zero the rows and columns torch.roll wrapped around: a shift, not a rotation of the picture."""
    image = image.clone()
    if dy > 0:
        image[:, :dy] = 0
    elif dy < 0:
        image[:, dy:] = 0
    if dx > 0:
        image[:, :, :dx] = 0
    elif dx < 0:
        image[:, :, dx:] = 0
    return image
