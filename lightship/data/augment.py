"""Batched augmentation of uint8 image batches: random crop, horizontal flip, cutout, normalise.

Everything runs as a handful of whole-batch tensor ops on the batch's device; there is no
per-image Python loop. The few random numbers per image (crop offsets, flip bit, cutout centre)
are drawn on a CPU generator seeded from (seed, epoch, batch index), so a batch's augmentation
does not depend on which batches came before it (resume mid-epoch is exact) nor on the device.

The crop is one ``index_select`` of image rows: the padded batch is viewed as a flat byte
buffer, ``unfold`` turns it into "every W-long window", and each output row picks the window
that starts at its source row plus the image's column offset. Flipped images read from mirrored
copies, so crop and flip together cost one gather. On CPU this is several times faster than
advanced indexing, ``torch.where`` or ``masked_fill`` with broadcast masks, which is also why
cutout multiplies by a uint8 keep-mask.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from lightship.errors import UserError

# Distinct streams keep the epoch order and the augmentation draws independent of each other and
# of the training loop's own per-batch generators (it uses stream 1 for mixup/cutmix).
ORDER_STREAM = 4
AUGMENT_STREAM = 5
_SEED_MASK = (1 << 64) - 1  # torch.Generator.manual_seed takes at most 64 bits


def make_generator(seed: int, epoch: int, index: int, stream: int) -> torch.Generator:
    """A CPU generator for one (seed, epoch, index, stream), independent of all others."""
    g = torch.Generator()
    g.manual_seed((((seed * 1_000_003 + epoch) * 1_000_003 + index) * 8 + stream) & _SEED_MASK)
    return g


@dataclass
class Augment:
    """Training augmentation, applied batched on the device.

    ``crop_padding``: random crop of the original size after zero-padding every side by this many
    pixels (0 = off). ``hflip``: mirror half of the images left-right. ``cutout``: zero a square of
    this side (DeVries & Taylor 2017) whose centre is uniform over the image, clipped at the
    borders; 0 = off. Padding and cutout both write pixel value 0 (black) before normalisation.
    ``rotate``: turn each image about its centre by an angle uniform in ±rotate degrees
    (bilinear, black fills the corners); 0 = off. Applied last, on the normalised floats.
    """

    crop_padding: int = 0
    hflip: bool = False
    cutout: int = 0
    rotate: float = 0.0

    def __post_init__(self) -> None:
        for name in ("crop_padding", "cutout"):
            value = getattr(self, name)
            if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 0:
                raise UserError(f"{name} {value!r} must be a whole number of pixels >= 0 "
                                "(0 = off)")
        if not 0 <= self.rotate <= 180:
            raise UserError(f"rotate {self.rotate!r} must be between 0 and 180 degrees (0 = off)")

    @property
    def active(self) -> bool:
        """Whether any augmentation is switched on."""
        return bool(self.crop_padding or self.hflip or self.cutout or self.rotate)


class AugmentParams(NamedTuple):
    """Per-image random draws (CPU int64, length N): crop offsets in [0, 2p], flip bit, cutout
    centre. All are drawn whatever is switched on, so turning one augmentation on or off does not
    change the others' draws."""

    dy: Tensor
    dx: Tensor
    flip: Tensor
    cy: Tensor
    cx: Tensor


def draw_params(n: int, height: int, width: int, augment: Augment,
                generator: torch.Generator) -> AugmentParams:
    """Draw the random parameters of ``n`` images on the (CPU) ``generator``."""
    span = 2 * augment.crop_padding + 1
    offsets = torch.randint(0, span, (2, n), generator=generator)
    flip = torch.randint(0, 2, (n,), generator=generator)
    cy = torch.randint(0, height, (n,), generator=generator)
    cx = torch.randint(0, width, (n,), generator=generator)
    if not augment.hflip:
        flip = torch.zeros_like(flip)
    return AugmentParams(offsets[0], offsets[1], flip, cy, cx)


def apply_params(x: Tensor, params: AugmentParams, augment: Augment) -> Tensor:
    """Crop, flip and cut out a uint8 batch (N, C, H, W) with given draws; returns uint8."""
    if not augment.active:
        return x
    n, c, h, w = x.shape
    dev = x.device
    p, s = augment.crop_padding, augment.cutout
    # Per-image bookkeeping on the CPU (the draws live there), then one small copy to the device.
    # Flipping a crop equals cropping the mirrored image at column offset 2p - dx; mirrored
    # copies of the flipped images sit after the N originals, so image i reads from slot
    # n + (its rank among the flipped) when flipped.
    flip = params.flip.bool()
    flipped = flip.nonzero().squeeze(1)
    image = torch.arange(n)
    image[flipped] = n + torch.arange(len(flipped))
    col0 = torch.where(flip, 2 * p - params.dx, params.dx)
    small = torch.stack([image, params.dy, col0, params.cy - s // 2, params.cx - s // 2])
    image, dy, col0, y0, x0 = small.to(dev, non_blocking=True).unbind(0)
    if p or len(flipped):
        xp = F.pad(x, (p, p, p, p)) if p else x
        src = xp
        if len(flipped):
            src = torch.cat([xp, xp.index_select(0, flipped.to(dev, non_blocking=True)).flip(3)])
        hp, wp = h + 2 * p, w + 2 * p
        windows = src.reshape(-1).unfold(0, w, 1)  # row view: every w-long run of bytes
        rows = torch.arange(h, device=dev)
        start = (((image[:, None, None] * c + torch.arange(c, device=dev)[None, :, None]) * hp
                  + (dy[:, None, None] + rows[None, None, :])) * wp + col0[:, None, None])
        x = windows.index_select(0, start.reshape(-1)).view(n, c, h, w)
    if s:
        rows, cols = torch.arange(h, device=dev), torch.arange(w, device=dev)
        in_r = ((rows >= y0[:, None]) & (rows < (y0 + s)[:, None])).to(torch.uint8)
        in_c = ((cols >= x0[:, None]) & (cols < (x0 + s)[:, None])).to(torch.uint8)
        # uint8 products, not bool &/masked_fill: broadcast bool ops are ~5x slower on CPU.
        keep = 1 - in_r[:, None, :, None] * in_c[:, None, None, :]
        x = x * keep
    return x


def normalise(x: Tensor, scale: Tensor, shift: Tensor, channels_last: bool = False) -> Tensor:
    """uint8 (N, C, H, W) → float32 ``x * scale + shift`` (scale = 1/(255·std), shift =
    -mean/std), in channels_last memory format when asked."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    # Reformat while still 1 byte per value; the float ops below keep the layout.
    x = x.contiguous(memory_format=fmt)
    return x.to(torch.float32).mul_(scale).add_(shift)


def norm_constants(mean: tuple[float, ...], std: tuple[float, ...],
                   device: torch.device | str = "cpu") -> tuple[Tensor, Tensor]:
    """The (1, C, 1, 1) ``scale`` and ``shift`` of :func:`normalise` for a mean/std (0–1 scale)."""
    m = torch.tensor(mean, dtype=torch.float64).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float64).view(1, -1, 1, 1)
    scale, shift = 1.0 / (255.0 * s), -m / s
    return scale.float().to(device), shift.float().to(device)


def translations(x: Tensor, pixels: int = 1) -> list[Tensor]:
    """The batch shifted by ``pixels`` down, up, right and left (edges repeated into the gap),
    in ``x``'s memory format: the views test-time augmentation averages over. Translations only:
    a flip would change what a digit means."""
    n, c, h, w = x.shape
    p = pixels
    fmt = (torch.channels_last if c > 1 and x.is_contiguous(memory_format=torch.channels_last)
           else torch.contiguous_format)
    padded = F.pad(x, (p, p, p, p), mode="replicate")
    return [padded[:, :, p + dy:p + dy + h, p + dx:p + dx + w].contiguous(memory_format=fmt)
            for dy, dx in ((-p, 0), (p, 0), (0, -p), (0, p))]  # view[i] = x[i + dy]


def rotate_batch(x: Tensor, degrees: Tensor, fill: Tensor) -> Tensor:
    """Turn each image of a float batch (N, C, H, W) about its centre by its angle in ``degrees``
    (CPU, length N), bilinear, with ``fill`` (1, C, 1, 1) where no source pixel lands."""
    rad = degrees.to(torch.float32) * (torch.pi / 180.0)
    cos, sin, zero = rad.cos(), rad.sin(), torch.zeros_like(rad)
    theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
    grid = F.affine_grid(theta.to(x.device), list(x.shape), align_corners=False)
    # zeros padding of (x - fill) puts exactly `fill` outside the source image
    return F.grid_sample(x - fill, grid, mode="bilinear", padding_mode="zeros",
                         align_corners=False) + fill


def augment_batch(x: Tensor, augment: Augment, generator: torch.Generator, scale: Tensor,
                  shift: Tensor, channels_last: bool = False) -> Tensor:
    """Augment and normalise a uint8 batch (N, C, H, W) on its device; returns float32."""
    n, _, h, w = x.shape
    params = draw_params(n, h, w, augment, generator)
    out = normalise(apply_params(x, params, augment), scale, shift, channels_last)
    if augment.rotate:  # drawn after the other draws, so those stay as they were without it
        degrees = (torch.rand(n, generator=generator) * 2 - 1) * augment.rotate
        out = rotate_batch(out, degrees, shift)  # black (pixel 0) normalises to `shift`
        if channels_last:
            out = out.contiguous(memory_format=torch.channels_last)
    return out
