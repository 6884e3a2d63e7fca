"""Parameter-free image operations used inside training graphs of image-to-image specs.

guided_filter, color_shift and superpixel build White-box Cartoonization's surface,
texture and structure representations (and its output filter); image_pool is
CycleGAN's history of generated images for the discriminators. Images are (N, C, H, W)
with values in [0, 1].
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Annotated, Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from blocks.registry import Range, register

# --- guided_filter -----------------------------------------------------------------------


def box_mean(x: torch.Tensor, radius: int) -> torch.Tensor:
    """Mean over the (2r + 1)² window around each pixel, clipped to the image.

    Border pixels average only the pixels that exist (no padding values enter). The
    window is a product of a row range and a column range, so two 1-D passes give the
    exact 2-D mean at O(r) cost per pixel.
    """
    k = 2 * radius + 1
    x = F.avg_pool2d(x, (k, 1), stride=1, padding=(radius, 0), count_include_pad=False)
    return F.avg_pool2d(x, (1, k), stride=1, padding=(0, radius), count_include_pad=False)


@register("guided_filter", kind="op", inputs=("x", "guide"), min_inputs=1, trainable=False)
class GuidedFilter(nn.Module):
    """Edge-preserving smoothing of x by the guided filter of He et al. (differentiable).

    Each output pixel is ``mean(a) · guide + mean(b)``, where ``a = cov(guide, x) /
    (var(guide) + eps)`` and ``b = mean(x) − a · mean(guide)`` are fitted in every
    (2·radius + 1)² window (clipped at the borders). Without a guide, x guides itself,
    as in WBC's surface representation. The guide has 1 channel (shared by all of x's)
    or as many as x (channel by channel, as WBC does).

    eps is in squared image units, so it depends on the value range: WBC works on
    [-1, 1] images, and its values divide by 4 for Loom's [0, 1] images. WBC filters
    the generator output, guided by the photo, with radius 1 and eps 1e-2 in training
    (5e-3 at inference), i.e. 2.5e-3 here; that most common use is the default. For
    the surface representation WBC uses radius 5 and eps 0.2, i.e. eps 0.05 here.

    Args:
        radius: half the window side; the window is (2·radius + 1) pixels square.
        eps: regularization; larger values smooth more, flattening weaker edges.
    """

    def __init__(
        self,
        *,
        radius: Annotated[int, Range(ge=1)] = 1,
        eps: Annotated[float, Range(gt=0)] = 2.5e-3,
    ) -> None:
        super().__init__()
        if radius < 1 or eps <= 0:
            raise ValueError(f"guided_filter: need radius ≥ 1 and eps > 0, got {radius}, {eps}")
        self.radius = radius
        self.eps = eps

    def forward(self, x: torch.Tensor, guide: torch.Tensor | None = None) -> torch.Tensor:
        guide = x if guide is None else guide
        _check_guide(x, guide)
        dtype = x.dtype
        # E[x²] − E[x]² cancels badly in 16-bit floats.
        if torch.finfo(dtype).bits < 32:
            x, guide = x.float(), guide.float()
        r = self.radius
        mean_g, mean_x = box_mean(guide, r), box_mean(x, r)
        cov = box_mean(guide * x, r) - mean_g * mean_x
        var = box_mean(guide * guide, r) - mean_g * mean_g
        a = cov / (var + self.eps)
        b = mean_x - a * mean_g
        return (box_mean(a, r) * guide + box_mean(b, r)).to(dtype)

    def extra_repr(self) -> str:
        return f"radius={self.radius}, eps={self.eps}"


def _check_guide(x: torch.Tensor, guide: torch.Tensor) -> None:
    if x.ndim != 4 or guide.ndim != 4:
        raise ValueError(
            f"guided_filter: x and guide must be (N, C, H, W), got {tuple(x.shape)} "
            f"and {tuple(guide.shape)}"
        )
    same_size = guide.shape[0] == x.shape[0] and guide.shape[2:] == x.shape[2:]
    if not same_size or guide.shape[1] not in (1, x.shape[1]):
        raise ValueError(
            f"guided_filter: guide {tuple(guide.shape)} must match x {tuple(x.shape)} in "
            f"batch and size, with 1 or {x.shape[1]} channels"
        )


# --- color_shift -------------------------------------------------------------------------

Interval = tuple[float, float]


@register(
    "color_shift",
    kind="op",
    inputs=("x", "y"),
    outputs=("x", "y"),
    min_inputs=1,
    trainable=False,
)
class ColorShift(nn.Module):
    """WBC's texture representation: RGB to one gray channel with random weights.

    Per sample, weights w_r, w_g, w_b are drawn uniformly from their ranges (around
    the luma weights 0.299, 0.587, 0.114) and the output is ``(w_r·R + w_g·G + w_b·B)
    / (w_r + w_g + w_b)``, shape (N, 1, H, W). Both inputs get the same weights per
    sample: give the generator output as x and the cartoon as y, so the texture
    discriminator cannot tell them apart by their gray conversion. Returns a tuple as
    long as the inputs: (x_gray, y_gray), or (x_gray,) when y is omitted. Weights come
    from torch's global CPU generator, so ``torch.manual_seed`` reproduces them on
    every device. (WBC draws one set per batch; per sample gives more variety.)

    Args:
        r_range: [low, high] of the red weight (WBC: 0.199 to 0.399).
        g_range: [low, high] of the green weight (WBC: 0.487 to 0.687).
        b_range: [low, high] of the blue weight (WBC: 0.014 to 0.214).
        mode: uniform draws the weights each call; fixed uses each range's centre,
            deterministic, for validation and tests.
    """

    def __init__(
        self,
        *,
        r_range: Interval = (0.199, 0.399),
        g_range: Interval = (0.487, 0.687),
        b_range: Interval = (0.014, 0.214),
        mode: Literal["uniform", "fixed"] = "uniform",
    ) -> None:
        super().__init__()
        ranges = {"r_range": r_range, "g_range": g_range, "b_range": b_range}
        for name, (low, high) in ranges.items():
            if not 0 <= low <= high:
                raise ValueError(
                    f"color_shift: {name} must satisfy 0 ≤ low ≤ high, got {[low, high]}"
                )
        lows, highs = r_range[0] + g_range[0] + b_range[0], r_range[1] + g_range[1] + b_range[1]
        if (lows if mode == "uniform" else highs) <= 0:
            raise ValueError("color_shift: the weights could all be 0; raise a range's low end")
        if mode not in ("uniform", "fixed"):
            raise ValueError(f"color_shift: mode must be 'uniform' or 'fixed', got {mode!r}")
        # Always on the CPU (the weights are drawn there), even when built under a meta
        # or CUDA default device, as shape inference does.
        self.low = torch.tensor([r_range[0], g_range[0], b_range[0]], device="cpu")
        self.high = torch.tensor([r_range[1], g_range[1], b_range[1]], device="cpu")
        self.mode = mode

    def weights(self, batch: int) -> torch.Tensor:
        """(batch, 3) normalised weights on the CPU, one row per sample."""
        if self.mode == "fixed":
            w = ((self.low + self.high) / 2).expand(batch, 3)
        else:
            w = self.low + (self.high - self.low) * torch.rand(batch, 3)
        return w / w.sum(dim=1, keepdim=True)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        images = (x,) if y is None else (x, y)
        for name, image in zip("xy", images, strict=False):
            if image.ndim != 4 or image.shape[1] != 3:
                raise ValueError(
                    f"color_shift: {name} must be (N, 3, H, W), got {tuple(image.shape)}"
                )
        if y is not None and y.shape[0] != x.shape[0]:
            raise ValueError(
                f"color_shift: x and y need the same batch size for shared weights, "
                f"got {x.shape[0]} and {y.shape[0]}"
            )
        w = self.weights(x.shape[0]).to(device=x.device, dtype=x.dtype)
        w = rearrange(w, "n c -> n c 1 1")
        return tuple((image * w).sum(dim=1, keepdim=True) for image in images)

    def extra_repr(self) -> str:
        return f"mode={self.mode}"


# --- superpixel --------------------------------------------------------------------------

#: Adaptive colouring's std thresholds: WBC's 20 and 40 on the 0–255 scale.
ADAPTIVE_STD = (20 / 255, 40 / 255)

#: Gaussian pre-smoothing per method when sigma is not given (WBC's values).
DEFAULT_SIGMA = {"felzenszwalb": 0.8, "slic": 1.0}


@register("superpixel", kind="op", grad=False, trainable=False)
class Superpixel(nn.Module):
    """WBC's structure representation: each segment of the image painted one colour.

    Every image is segmented with scikit-image on the CPU and each segment takes its
    colour. The output has the input's shape, dtype and device and carries no gradient.
    Values outside [0, 1] are clipped for the segmentation only.

    Defaults follow WBC's released training code, which uses SLIC with 200 segments,
    compactness 10 and sigma 1 (in Lab) unless asked for its "enhanced" mode. That
    mode is the paper's method: Felzenszwalb (k = 10 on [-1, 1] images, i.e. scale 5
    on [0, 1], sigma 0.8, min_size 100), then selective-search merging down to 200
    regions, which is not implemented here; raise min_size for fewer, larger segments.

    Adaptive colouring (the paper's, on [0, 1]): with σ the std of the segment's
    values over its pixels and channels, its colour is the mean if σ < 20/255, the
    average of mean and per-channel median if σ < 40/255, else the median; colours
    are clipped at 0, raised to ``power`` and divided by the image's largest value,
    as WBC's code does, which lifts contrast and keeps the brightest segment at 1.

    Args:
        method: slic (compact, regular superpixels) or felzenszwalb (graph-based,
            sizes follow the image content).
        segments: slic only, the approximate number of segments.
        compactness: slic only, balance of colour and space proximity (10 suits Lab,
            used for RGB input; gray and other inputs are segmented in raw values).
        scale: felzenszwalb only, higher means larger segments.
        sigma: Gaussian smoothing before segmenting; null for the method's WBC value
            (0.8 for felzenszwalb, 1 for slic).
        min_size: felzenszwalb only, the smallest segment in pixels.
        coloring: mean colours each segment by its mean; adaptive as described above.
        power: adaptive only, the contrast exponent μ (WBC: 1.2; 1 keeps the tones).
        workers: threads segmenting the images of a batch in parallel; 0 for none.
    """

    def __init__(
        self,
        *,
        method: Literal["slic", "felzenszwalb"] = "slic",
        segments: Annotated[int, Range(ge=1)] = 200,
        compactness: Annotated[float, Range(gt=0)] = 10.0,
        scale: Annotated[float, Range(gt=0)] = 5.0,
        sigma: Annotated[float, Range(ge=0)] | None = None,
        min_size: Annotated[int, Range(ge=1)] = 100,
        coloring: Literal["mean", "adaptive"] = "mean",
        power: Annotated[float, Range(gt=0)] = 1.2,
        workers: Annotated[int, Range(ge=0)] = 0,
    ) -> None:
        super().__init__()
        if method not in DEFAULT_SIGMA:
            raise ValueError(
                f"superpixel: method must be one of {list(DEFAULT_SIGMA)}, got {method!r}"
            )
        if coloring not in ("mean", "adaptive"):
            raise ValueError(f"superpixel: coloring must be 'mean' or 'adaptive', got {coloring!r}")
        if workers < 0:
            raise ValueError(f"superpixel: workers must be ≥ 0, got {workers}")
        self.method = method
        self.segments = segments
        self.compactness = compactness
        self.scale = scale
        self.sigma = DEFAULT_SIGMA[method] if sigma is None else sigma
        self.min_size = min_size
        self.coloring = coloring
        self.power = power
        self.workers = workers
        self._executor: ThreadPoolExecutor | None = None

    def segment(self, image: np.ndarray) -> np.ndarray:
        """Labels 0 … n − 1 of an (H, W, C) float image, as an (H, W) int array."""
        from skimage import segmentation  # here: most networks never need it (0.1 s)

        image = np.clip(image, 0.0, 1.0)
        gray = image.shape[-1] == 1
        image, axis = (image[..., 0], None) if gray else (image, -1)
        labels: np.ndarray  # scikit-image's segmentation functions are unannotated
        if self.method == "slic":
            labels = segmentation.slic(
                image,
                n_segments=self.segments,
                compactness=self.compactness,
                sigma=self.sigma,
                convert2lab=image.ndim == 3 and image.shape[-1] == 3,
                start_label=0,
                channel_axis=axis,
            )
        else:
            labels = segmentation.felzenszwalb(
                image, scale=self.scale, sigma=self.sigma, min_size=self.min_size, channel_axis=axis
            )
        # Renumber to 0 … n − 1 so the per-segment arrays below have no holes.
        return np.unique(labels, return_inverse=True)[1].reshape(labels.shape)

    def paint(self, image: np.ndarray) -> np.ndarray:
        """The (H, W, C) image with every segment filled by its colour."""
        labels = self.segment(image)
        colors = segment_colors(image, labels, self.coloring, self.power)
        painted: np.ndarray = colors[labels]  # (numpy: indexing by labels is Any)
        return painted

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            if x.is_meta:  # shape inference: nothing to segment
                return torch.empty_like(x)
            images = rearrange(x.detach().float().cpu().numpy(), "n c h w -> n h w c")
            if self.workers > 0 and len(images) > 1:
                painted = list(self._pool().map(self.paint, images))
            else:
                painted = [self.paint(image) for image in images]
            out = torch.from_numpy(rearrange(np.stack(painted), "n h w c -> n c h w"))
            return out.to(device=x.device, dtype=x.dtype).contiguous()

    def _pool(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self.workers, thread_name_prefix="superpixel")
        return self._executor

    def __getstate__(self) -> dict[str, Any]:
        # Threads cannot be copied or pickled (deepcopy for EMA, spawn workers).
        return {**self.__dict__, "_executor": None}

    def extra_repr(self) -> str:
        return f"method={self.method}, coloring={self.coloring}, workers={self.workers}"


def segment_colors(
    image: np.ndarray, labels: np.ndarray, coloring: str, power: float
) -> np.ndarray:
    """(n, C) colour of each segment of an (H, W, C) image; see Superpixel for the rules."""
    channels = image.shape[-1]
    values = image.reshape(-1, channels).astype(np.float64)
    flat = labels.ravel()
    n = int(flat.max()) + 1
    counts = np.bincount(flat, minlength=n).astype(np.float64)
    sums = np.stack([np.bincount(flat, values[:, c], minlength=n) for c in range(channels)], 1)
    mean = sums / counts[:, None]
    if coloring == "mean":
        return mean
    squares = np.bincount(flat, (values**2).sum(axis=1), minlength=n)
    size = counts * channels
    std = np.sqrt(np.maximum(squares / size - (sums.sum(axis=1) / size) ** 2, 0.0))
    from scipy import ndimage  # here: most networks never need it (0.15 s)

    index = np.arange(n)
    median = np.stack(
        [ndimage.median(values[:, c], labels=flat, index=index) for c in range(channels)], 1
    )
    low, high = ADAPTIVE_STD
    mean_share = np.where(std < low, 1.0, np.where(std < high, 0.5, 0.0))[:, None]
    # Annotated: numpy types np.clip with a None bound as Any.
    colors: np.ndarray = np.clip(mean_share * mean + (1 - mean_share) * median, 0.0, None) ** power
    top = colors.max()
    return colors / top if top > 0 else colors


# --- image_pool --------------------------------------------------------------------------


@register("image_pool", kind="op", grad=False, trainable=False)
class ImagePool(nn.Module):
    """CycleGAN's history of generated images (Shrivastava et al.) for the discriminator.

    In training, each image of the batch is stored and returned while the pool is not
    full; once full, with probability 0.5 a random stored image is returned and
    replaced by the new one, otherwise the new one is returned. In eval mode, and with
    size 0, the input passes through. The output carries no gradient. The pool is
    a buffer, so checkpoints keep it (size · C · H · W values: 39 MB for 50 RGB
    images of 256²); it is shaped by the first batch, and all batches must match it.
    Draws use torch's global CPU generator.

    Args:
        size: how many images the pool holds (CycleGAN: 50); 0 disables it.
    """

    images: torch.Tensor  # buffers, declared for the type checker
    count: torch.Tensor

    def __init__(self, *, size: Annotated[int, Range(ge=0)] = 50) -> None:
        super().__init__()
        if size < 0:
            raise ValueError(f"image_pool: size must be ≥ 0, got {size}")
        self.size = size
        # Empty until the first batch gives the image shape; see _load_from_state_dict.
        self.register_buffer("images", torch.empty(0))
        self.register_buffer("count", torch.zeros((), dtype=torch.long))
        self._count = 0  # mirror of count, read without a device sync

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.detach()
        if self.size == 0 or not self.training or x.is_meta:
            return x
        self._allocate(x)
        out = []
        for image in x:
            if self._count < self.size:
                self.images[self._count] = image
                self._count += 1
                out.append(image)
            elif torch.rand(()) < 0.5:
                i = int(torch.randint(self.size, ()))
                out.append(self.images[i].to(x.dtype, copy=True))
                self.images[i] = image
            else:
                out.append(image)
        self.count.fill_(self._count)
        return torch.stack(out)

    def _allocate(self, x: torch.Tensor) -> None:
        if self.images.numel() == 0:
            shape = (self.size, *x.shape[1:])
            self.images = torch.zeros(shape, dtype=x.dtype, device=x.device)
        elif self.images.shape[1:] != x.shape[1:]:
            raise ValueError(
                f"image_pool: it holds images of shape {tuple(self.images.shape[1:])}, got a "
                f"batch of {tuple(x.shape[1:])}; crop all batches to one size"
            )

    def _load_from_state_dict(
        self,
        state_dict: dict[str, Any],
        prefix: str,
        local_metadata: dict[str, Any],
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        # The pool's shape is known only once filled: take the checkpoint's shape.
        saved = state_dict.get(prefix + "images")
        if saved is not None and saved.shape != self.images.shape:
            if saved.numel() and saved.shape[0] != self.size:
                error_msgs.append(
                    f"image_pool {prefix!r}: the checkpoint holds {saved.shape[0]} images "
                    f"but size is {self.size}; set size: {saved.shape[0]}"
                )
                return
            self.images = torch.empty(saved.shape, dtype=saved.dtype, device=self.images.device)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )
        self._count = int(self.count)

    def extra_repr(self) -> str:
        return f"size={self.size}"
