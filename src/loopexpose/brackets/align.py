"""Registration of a handheld bracket: every frame warped onto one reference frame despite the exposure difference.

A handheld bracket moves between frames (a few pixels of translation, a fraction of a degree of roll, a little
perspective); fused as it is, every edge doubles. :func:`align_frames` estimates each frame's motion against a
reference frame, warps the frames onto the reference's pixel grid and crops them to the region every frame covers.

How the motion is estimated (:func:`estimate_motion`), per frame against the reference, on grey images
downscaled to at most :data:`ESTIMATE_SIDE` pixels a side (so a 12 MP bracket costs little more than a small
one; only the warp is at full size), pairs in parallel:

1. **Exposure matching.** Of each pair, the brighter grey image is mapped onto the darker one's histogram: a
   monotone tone curve, so edges stay where they are while their contrast is matched. Mapping down never
   stretches the darker frame's quantisation steps. Pixels clipped in any channel of the brighter frame (with a
   margin), or in the noise floor of the darker one, are masked out. The darker, noisier image is ECC's
   template, which is never resampled (resampling smooths noise, and the correlation would reward that).
2. **Translation.** Median-threshold bitmaps (Ward's MTB, ``cv2.AlignMTB``, exposure-invariant, integer) refined
   by phase correlation, or phase correlation alone, whichever correlates better, at :data:`COARSE_SIDE`.
3. **Refinement.** The enhanced correlation coefficient (ECC, ``cv2.findTransformECCWithMask``, Evangelidis and
   Psarakis 2008) of the matched images refines a Euclidean motion (rotation and translation) from coarse to
   fine over a pyramid; then the tone curve is matched again on the part of the scene both frames show. A level's step is refused when it wanders (:data:`MAX_STEP`) or
   lowers the correlation: with little valid area, a frame nearly black or white, ECC can drift off.
4. **Camera rotation.** Handheld shake turns the camera about its centre: every frame is the reference seen
   through ``K R K^-1`` (a pinhole camera of focal length ``f``, principal point at the centre, turned by a
   rotation ``R``), 3 angles per frame and one ``f`` for the bracket, far better conditioned than 8 free
   homography entries. SIFT features (``cv2.SIFT``, Lowe 2004) of each frame's equalised grey image are matched
   to the reference's (ratio test, then the inliers of a RANSAC homography) and one least-squares fit
   (``scipy.optimize.least_squares``, robust loss) finds ``f`` and every frame's angles together: the bracket's
   field of view is estimated, no EXIF needed. Features, not the correlation, because across exposures the
   correlation's optimum is biased (tone differences that no global curve removes: glow, noise, clipping): fitted
   to the correlation from the true motion, the same rotation model drifts 0.1 to 0.4 px away on the
   benchmark's wide exposure steps, to a higher correlation than the truth's. A frame with too few matches
   (:data:`MIN_MATCHES`) or whose rotation disagrees with its Euclidean motion (it correlates worse, or it moves
   a corner further than :data:`MAX_PERSPECTIVE` of the diagonal from it) takes the homography step instead.
5. **Homography.** On the last-but-one level the pixels the Euclidean motion explains worst are masked (what
   moved in the scene: water, people, a lamp's glow that grows with exposure), and a homography is fitted from
   the Euclidean motion and refined on the finest level: a turned camera's perspective, which handheld shake
   always adds. It is kept when it correlates at least as well as the Euclidean motion there and looks like a
   turned camera (perspective within :data:`MAX_PERSPECTIVE`, no shear); else the Euclidean motion.
6. **Sanity.** A frame *cannot be aligned* when its correlation with the reference stays below
   :data:`MIN_CORRELATION` (another scene, or a frame too dark or bright to match), when it has too little
   texture (:data:`MIN_TEXTURE`), when ECC converges nowhere, or when the motion is implausible for a handheld
   bracket (a shift over :data:`MAX_SHIFT` of the side, a rotation over :data:`MAX_ROTATION` degrees, a scale
   change over :data:`MAX_SCALE`).

**Rule for frames that cannot be aligned:** they are left out of the aligned bracket (fusing them unaligned
would ghost every edge, and a frame of another scene has no place in the result), with a
:class:`AlignmentWarning` naming the frame; :attr:`Alignment.motions` says why. The reference is always kept.

**Borders:** cropped, not masked. The aligned frames are cut to the largest axis-aligned rectangle that every
kept frame covers (:attr:`Alignment.crop`, in the reference frame's pixels), so the fused image is a little smaller
than the input and no part of it is fused from fewer exposures than the rest.

Shapes: frames ``(N, 3, H, W)`` in ``[0, 1]``, any exposure order, any device (estimation and warping run on the
CPU with OpenCV; the result goes back to the frames' device).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import cv2
import numpy as np
import torch
from scipy.optimize import least_squares

from loopexpose.errors import LoopExposeError
from loopexpose.io import LUMA_WEIGHTS, REFERENCE_LUMA

__all__ = [
    "Alignment",
    "AlignmentWarning",
    "Motion",
    "align_frames",
    "estimate_motion",
    "warp_frames",
    "common_crop",
    "reference_frame",
]

#: Long side of the grey images the motion is estimated on (finest ECC level); larger photos are downscaled.
ESTIMATE_SIDE = 1024
#: Long side at which the coarse translation (MTB, phase correlation) and the first ECC level run.
COARSE_SIDE = 256
#: ECC iterations on the first level of a fit (which starts from far) and on the finer ones (which polish), and
#: the convergence threshold on the correlation.
ECC_ITERATIONS = 60
ECC_REFINE_ITERATIONS = 10
ECC_EPSILON = 1e-6
#: The Gaussian ECC smooths both images with (side, pixels); our own correlations smooth alike.
ECC_BLUR = 5
#: How far ECC may move the image corners from where a level starts, as a fraction of that level's diagonal (and
#: :data:`MAX_PERSPECTIVE` when a homography starts from the Euclidean motion).
MAX_STEP = 0.04
#: A homography is kept only if its perspective moves no corner further than this fraction of the diagonal.
MAX_PERSPECTIVE = 0.06
#: Long side of the images the camera-rotation features are found on: SIFT doubles its input first, so a
#: 512-pixel image costs what a 1024-pixel one would, and its keypoints are sub-pixel (on the benchmark's scenes,
#: larger sides are slower and no more accurate).
FEATURE_SIDE = 512
#: SIFT keypoints per frame, Lowe's ratio test, the RANSAC threshold (pixels at the estimation scale) and the
#: inlier matches a frame needs for its camera rotation.
FEATURES = 1000
MATCH_RATIO = 0.8
RANSAC_THRESHOLD = 1.0
MIN_MATCHES = 20
#: The horizontal fields of view (degrees) the focal-length estimate may take, and where it starts.
HFOV_RANGE = (1.0, 140.0)
HFOV_START = 50.0
#: A camera rotation is kept when it correlates no more than this much less than the Euclidean motion: the
#: correlation is biased (step 4 of the module docstring), so this only catches a rotation that is wrong.
ROTATION_TOLERANCE = 0.01
#: Below this correlation of the exposure-matched images with the reference a frame cannot be aligned ...
MIN_CORRELATION = 0.5
#: ... and below this one it is also registered through its neighbour in exposure (the better one is kept).
CHAIN_BELOW = 0.9
#: How the frames are resampled at full size: bicubic. Bilinear is 2.5x faster, but its blur alone costs 0.003 of
#: fused MEF-SSIM on the benchmark's brackets (bench/align.py), most of the 0.005 allowed for alignment.
WARP_INTERPOLATION = cv2.INTER_CUBIC
#: Plausible handheld motion: shift (fraction of the side), rotation (degrees), scale change (fraction).
MAX_SHIFT = 0.15
MAX_ROTATION = 8.0
MAX_SCALE = 0.05
#: Pixels darker than this in the darker frame (noise floor), or brighter than ``1 - CLIP`` in the brighter one
#: (clipped highlights), are left out of the ECC objective.
CLIP = 0.03
#: A pair needs at least this fraction of unclipped pixels with visible gradients to be registered.
MIN_TEXTURE = 0.02


class AlignmentWarning(UserWarning):
    """A frame of a bracket that could not be aligned and is left out; the message names the frame."""


@dataclass(frozen=True)
class Motion:
    """One frame's motion relative to the reference frame.

    Attributes:
        name: the frame's name (file name, or ``frame <index>``).
        dx, dy: where the reference's centre point lies in this frame, minus the centre, in full-size pixels
            (positive: the content moved right / down).
        rotation: degrees; positive: this frame's content is turned clockwise on screen against the reference.
        model: ``"reference"``, ``"euclidean"`` (rotation and translation), ``"rotation"`` (the camera turned
            about its centre: ``K R K^-1``), ``"homography"`` or ``"none"`` (could not be aligned).
        correlation: correlation coefficient of the exposure-matched grey images after alignment, over the
            pixels that hold detail in both, in ``[-1, 1]`` (1 for the reference); the confidence of the estimate.
        aligned: whether the frame is in the aligned bracket.
        problem: why it could not be aligned (empty when aligned).
        via: the frame it was registered through when it shared too little with the reference directly (its
            neighbour in exposure, itself aligned); empty when registered to the reference. ``correlation`` is
            then the one with that frame.
        matrix: ``(3, 3)`` homography mapping reference pixels ``(x, y, 1)`` to this frame's pixels (full size,
            pixel centres at integers); identity for the reference.
    """

    name: str
    dx: float
    dy: float
    rotation: float
    model: str
    correlation: float
    aligned: bool = True
    problem: str = ""
    via: str = ""
    matrix: np.ndarray = field(default_factory=lambda: np.eye(3), repr=False, compare=False)

    def describe(self) -> str:
        """One line: ``dx +1.20 px, dy -0.40 px, rotation +0.31 deg, euclidean, correlation 0.97``."""
        if self.model == "reference":
            return "reference"
        text = (f"dx {self.dx:+.2f} px, dy {self.dy:+.2f} px, rotation {self.rotation:+.2f} deg, {self.model}, "
                f"correlation {self.correlation:.3f}" + (f" (via {self.via})" if self.via else ""))  # fmt: skip
        return text if self.aligned else f"left out: {self.problem}"


@dataclass
class Alignment:
    """What :func:`align_frames` returns.

    Attributes:
        frames: ``(K, 3, h, w)`` the frames that could be aligned (always the reference), in input order, warped
            onto the reference and cropped to :attr:`crop`; same dtype and device as the input.
        kept: input index of each frame in :attr:`frames`.
        reference: input index of the reference frame.
        crop: ``(x, y, width, height)`` of the common rectangle in the reference frame's pixels.
        motions: one :class:`Motion` per input frame, in input order.
    """

    frames: torch.Tensor
    kept: list[int]
    reference: int
    crop: tuple[int, int, int, int]
    motions: list[Motion]

    @property
    def left_out(self) -> list[int]:
        """Input indices of the frames that could not be aligned."""
        return [i for i, motion in enumerate(self.motions) if not motion.aligned]


# ------------------------------------------------------------------------------------------ grey images

def _grey(frame: torch.Tensor, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """``(luma, peak)`` of one ``(3, H, W)`` frame at ``size`` ``(width, height)``: Rec. 601 luma and the
    brightest channel (which shows where any channel clips), float32 in [0, 1]. Each channel is downscaled first
    (area filter): three resizes cost less than two full-size passes over the frame."""
    frame = frame.detach().to("cpu", torch.float32)
    planes = [frame[channel].numpy() for channel in range(3)]
    if (planes[0].shape[1], planes[0].shape[0]) != size:
        planes = [cv2.resize(plane, size, interpolation=cv2.INTER_AREA) for plane in planes]
    luma = planes[0] * np.float32(LUMA_WEIGHTS[0])
    luma += planes[1] * np.float32(LUMA_WEIGHTS[1])
    luma += planes[2] * np.float32(LUMA_WEIGHTS[2])
    peak = np.maximum(np.maximum(planes[0], planes[1]), planes[2])
    return np.clip(luma, 0, 1, out=luma), np.clip(peak, 0, 1, out=peak)


def _estimate_size(height: int, width: int, side: int) -> tuple[int, int]:
    """``(width, height)`` with the long side at most ``side``, the aspect kept."""
    factor = min(1.0, side / max(height, width))
    return max(1, round(width * factor)), max(1, round(height * factor))


def reference_frame(frames: torch.Tensor) -> int:
    """Index of the frame whose mean Rec. 601 luma is nearest mid-grey (:data:`loopexpose.io.REFERENCE_LUMA`),
    measured on a 64-pixel thumbnail. ``frames``: ``(N, 3, H, W)`` in ``[0, 1]``."""
    height, width = frames.shape[-2:]
    size = _estimate_size(height, width, 64)
    return int(np.argmin([abs(float(_grey(frame, size)[0].mean()) - REFERENCE_LUMA) for frame in frames]))


def _match_histogram(source: np.ndarray, target: np.ndarray, bins: int = 1024) -> np.ndarray:
    """``source`` (grey, float32 in [0, 1]) through the monotone curve that gives it ``target``'s histogram.

    Hand-written: ``skimage.exposure.match_histograms`` sorts every pixel (``np.unique``); cumulative histograms
    of 1024 bins are an order of magnitude faster at the estimation scale and exact enough for 8-bit frames.
    """
    def cdf(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        index = np.minimum((image * bins).astype(np.int32), bins - 1)
        counts = np.bincount(index.ravel(), minlength=bins).astype(np.float64)
        return index, np.cumsum(counts) / counts.sum()

    index, source_cdf = cdf(source)
    _, target_cdf = cdf(target)
    # a bin's pixels go to the target value at the middle of the bin's quantile range
    middle = source_cdf - 0.5 * np.diff(source_cdf, prepend=0.0)
    levels = (np.arange(bins) + 0.5) / bins
    curve = np.interp(middle, target_cdf, levels).astype(np.float32)
    return curve[index]


@dataclass
class _Pair:
    """Exposure-matched grey images of the reference and one frame at the estimation scale, with masks (uint8)
    of the pixels that hold detail. The darker (noisier) image is the *template*, which ECC does not resample:
    resampling a noisy image smooths its noise where the sample positions fall between pixels, and the
    correlation would reward that; the brighter one, mapped onto the darker one's histogram, is the *input*."""

    template: np.ndarray
    input: np.ndarray
    template_mask: np.ndarray
    input_mask: np.ndarray
    template_is_reference: bool


def _matched_pair(reference: tuple[np.ndarray, np.ndarray], frame: tuple[np.ndarray, np.ndarray]) -> _Pair:
    """The brighter of two ``(luma, peak)`` images mapped onto the darker's histogram; masks: not clipped (in any
    channel, with a margin for the blur around clipped areas) in the brighter one, above the noise floor of the
    darker one."""
    reference_darker = float(reference[0].mean()) <= float(frame[0].mean())
    dark, bright = (reference, frame) if reference_darker else (frame, reference)
    bright_mask = cv2.erode((bright[1] < 1 - CLIP).astype(np.uint8), np.ones((5, 5), np.uint8))
    dark_mask = (dark[0] > CLIP).astype(np.uint8)
    return _Pair(dark[0], _match_histogram(bright[0], dark[0]), dark_mask, bright_mask, reference_darker)


# ------------------------------------------------------------------------------------------ geometry

def _scale_matrix(sx: float, sy: float) -> np.ndarray:
    """Maps the pixel centres of an image downscaled by ``(sx, sy)`` (area filter) to the full-size image's."""
    return np.array([[sx, 0, (sx - 1) / 2], [0, sy, (sy - 1) / 2], [0, 0, 1]])


def _rescale(matrix: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """A pixel map of the small images as the same map of the images ``scale`` maps them to."""
    result = scale @ matrix @ np.linalg.inv(scale)
    return result / result[2, 2]


def _describe_matrix(matrix: np.ndarray, height: int, width: int) -> tuple[float, float, float, float]:
    """``(dx, dy, rotation in degrees, scale)`` of a reference -> frame homography, at the image centre."""
    centre = np.array([(width - 1) / 2, (height - 1) / 2, 1.0])
    moved = matrix @ centre
    moved = moved[:2] / moved[2]
    # the local linear part at the centre (the Jacobian of the homography there)
    h = matrix / (matrix[2] @ centre)
    jacobian = h[:2, :2] - np.outer(moved, h[2, :2])
    rotation = math.degrees(math.atan2(jacobian[1, 0] - jacobian[0, 1], jacobian[0, 0] + jacobian[1, 1]))
    scale = math.sqrt(abs(np.linalg.det(jacobian)))
    return float(moved[0] - centre[0]), float(moved[1] - centre[1]), rotation, scale


def _corners(height: int, width: int) -> np.ndarray:
    return np.array([[0, 0, 1], [width - 1, 0, 1], [width - 1, height - 1, 1], [0, height - 1, 1]], np.float64)


def _apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """``(K, 2)`` images of ``(K, 3)`` homogeneous points."""
    moved = points @ matrix.T
    return moved[:, :2] / moved[:, 2:3]


# ------------------------------------------------------------------------------------------ estimation

def _pyramid(image: np.ndarray, coarse_side: int) -> list[np.ndarray]:
    """``image`` and its halvings (``cv2.pyrDown``) down to a long side of about ``coarse_side``; coarse first."""
    levels = [image]
    while max(levels[-1].shape) > 1.5 * coarse_side and min(levels[-1].shape) >= 32:
        levels.append(cv2.pyrDown(levels[-1]))
    return levels[::-1]


def _mask_pyramid(mask: np.ndarray, count: int) -> list[np.ndarray]:
    levels = [mask]
    for _ in range(count - 1):  # a pixel of a coarser level is valid when its whole neighbourhood was
        small = cv2.pyrDown(levels[-1].astype(np.float32))
        levels.append((small > 0.99).astype(np.uint8))
    return levels[::-1]


def _level_scale(fine: np.ndarray, coarse: np.ndarray) -> np.ndarray:
    """Pixel-centre map of ``coarse`` (a ``pyrDown`` of ``fine``, possibly several times) to ``fine``."""
    return _scale_matrix(fine.shape[1] / coarse.shape[1], fine.shape[0] / coarse.shape[0])


def _equalise(image: np.ndarray, bins: int = 1024) -> np.ndarray:
    """``image`` (grey in [0, 1]) through its own cumulative histogram: uniform levels, the order of pixels kept.
    Hand-written for the reason :func:`_match_histogram` gives (``cv2.equalizeHist`` takes 8-bit images only)."""
    index = np.minimum((image * bins).astype(np.int32), bins - 1)
    cdf = np.cumsum(np.bincount(index.ravel(), minlength=bins)) / index.size
    return cdf.astype(np.float32)[index]


def _coarse_translation(pair: _Pair, coarse: int) -> np.ndarray:
    """Template -> input translation ``(3, 3)`` at the estimation scale: the better (by correlation at
    ``coarse`` px) of median-threshold bitmaps (Ward's MTB, integer, exposure-invariant) refined by phase
    correlation, and phase correlation alone; both on the matched images, equalised (MTB is invariant to that,
    and 8-bit levels of a dark frame would be too few)."""
    size = _estimate_size(*pair.template.shape, coarse)
    reference = _equalise(cv2.resize(pair.template, size, interpolation=cv2.INTER_AREA))
    frame = _equalise(cv2.resize(pair.input, size, interpolation=cv2.INTER_AREA))
    scale = _scale_matrix(pair.template.shape[1] / size[0], pair.template.shape[0] / size[1])
    window = cv2.createHanningWindow(size, cv2.CV_32F)
    # MTB: the shift that brings the frame onto the reference, so the frame's content moved by its negative
    mtb = cv2.createAlignMTB(max_bits=5, exclude_range=4, cut=False)
    shift = mtb.calculateShift((reference * 255).astype(np.uint8), (frame * 255).astype(np.uint8))
    by_mtb = np.array([[1, 0, -shift[0]], [0, 1, -shift[1]], [0, 0, 1]], np.float64)
    back = cv2.warpAffine(frame, by_mtb[:2], size, flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_REPLICATE)  # fmt: skip
    (rx, ry), _ = cv2.phaseCorrelate(reference, back, window)  # what the integer MTB shift left, sub-pixel
    if abs(rx) < 2 and abs(ry) < 2:
        by_mtb[:2, 2] += (rx, ry)
    (px, py), _ = cv2.phaseCorrelate(reference, frame, window)
    by_phase = np.array([[1, 0, px], [0, 1, py], [0, 0, 1]], np.float64)
    everywhere = np.ones_like(reference, dtype=np.uint8)
    best = max((by_mtb, by_phase), key=lambda m: _masked_correlation(reference, frame, everywhere, everywhere, m)[0])
    return _rescale(best, scale)


def _rotation_homography(angles: np.ndarray, focal: float, height: int, width: int) -> np.ndarray:
    """``K R K^-1`` ``(3, 3)``: the pixel map of a pinhole camera of focal length ``focal`` (pixels; principal
    point at the centre of a ``height x width`` image) turned by the rotation vector ``angles`` ``(3,)`` (radians)."""
    k = np.array([[focal, 0, (width - 1) / 2], [0, focal, (height - 1) / 2], [0, 0, 1]])
    matrix = k @ cv2.Rodrigues(np.asarray(angles, np.float64).reshape(3, 1))[0] @ np.linalg.inv(k)
    return matrix / matrix[2, 2]


def _rotation_angles(matrix: np.ndarray, focal: float, height: int, width: int) -> np.ndarray:
    """The rotation vector ``(3,)`` of the rotation nearest ``K^-1 matrix K`` (Frobenius norm, by SVD): where a
    fit of :func:`_rotation_homography` to a homography starts."""
    k = np.array([[focal, 0, (width - 1) / 2], [0, focal, (height - 1) / 2], [0, 0, 1]])
    u, _, vt = np.linalg.svd(np.linalg.inv(k) @ matrix @ k)
    rotation = u @ vt
    return cv2.Rodrigues(rotation if np.linalg.det(rotation) > 0 else -rotation)[0].ravel()


def _features(grey: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray | None]:
    """``(points, descriptors)``: SIFT keypoints ``(K, 2)`` (x, y in the pixels of ``grey``) and descriptors
    ``(K, 128)`` (``None`` when there are none) of one ``(luma, peak)`` image, at most :data:`FEATURES`, found on
    it downscaled to :data:`FEATURE_SIDE`. The luma is equalised first (its own histogram: frames of any exposure
    look alike up to a monotone curve); clipped pixels and those in the noise floor are left out."""
    luma, peak = grey
    size = _estimate_size(*luma.shape, FEATURE_SIDE)
    if size != (luma.shape[1], luma.shape[0]):
        luma, peak = (cv2.resize(image, size, interpolation=cv2.INTER_AREA) for image in (luma, peak))
    mask = ((luma > CLIP) & (peak < 1 - CLIP)).astype(np.uint8)
    keypoints, descriptors = cv2.SIFT_create(nfeatures=FEATURES).detectAndCompute(
        (_equalise(luma) * 255).astype(np.uint8), mask)  # fmt: skip
    points = np.array([k.pt for k in keypoints], np.float64).reshape(-1, 2)
    to_estimate = _scale_matrix(grey[0].shape[1] / size[0], grey[0].shape[0] / size[1])
    return points * np.diag(to_estimate)[:2] + to_estimate[:2, 2], descriptors


def _feature_matches(reference, frame) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """``(reference points, frame points, homography)`` of two :func:`_features` results: the matches that pass
    Lowe's ratio test (:data:`MATCH_RATIO`) and agree with a RANSAC homography (:data:`RANSAC_THRESHOLD` px), as
    ``(K, 2)`` arrays, and that homography (reference -> frame); ``None`` below :data:`MIN_MATCHES`."""
    (points_a, descriptors_a), (points_b, descriptors_b) = reference, frame
    if descriptors_a is None or descriptors_b is None or min(len(points_a), len(points_b)) < 2:
        return None
    pairs = cv2.BFMatcher(cv2.NORM_L2).knnMatch(descriptors_a, descriptors_b, k=2)
    good = [m for m, n in (p for p in pairs if len(p) == 2) if m.distance < MATCH_RATIO * n.distance]
    if len(good) < MIN_MATCHES:
        return None
    a = points_a[[m.queryIdx for m in good]]
    b = points_b[[m.trainIdx for m in good]]
    homography, inliers = cv2.findHomography(a, b, cv2.RANSAC, RANSAC_THRESHOLD)
    if homography is None or inliers.sum() < MIN_MATCHES:
        return None
    inliers = inliers.ravel() > 0
    return a[inliers], b[inliers], homography


def _camera_rotations(matches: dict[int, tuple], height: int, width: int) -> tuple[float, dict[int, np.ndarray]]:
    """The focal length and each frame's camera rotation that best explain the matched features.

    Args:
        matches: per frame index, :func:`_feature_matches` of the reference and that frame.
        height, width: the size of the images the points are in.

    Returns:
        ``(focal, rotations)``: one focal length (pixels) for the whole bracket, within :data:`HFOV_RANGE`, and
        per frame index the ``(3, 3)`` reference -> frame :func:`_rotation_homography`. One robust least-squares
        fit (soft L1 of the point distances) of ``1 + 3 * len(matches)`` parameters: every frame's perspective
        constrains the focal length.
    """
    def focal_of(hfov: float) -> float:
        return width / 2 / math.tan(math.radians(hfov) / 2)

    start_focal = focal_of(HFOV_START)
    order = sorted(matches)
    start = [_rotation_angles(matches[i][2], start_focal, height, width) for i in order]
    sources = [np.column_stack([matches[i][0], np.ones(len(matches[i][0]))]) for i in order]

    def distances(parameters: np.ndarray) -> np.ndarray:
        focal = parameters[-1]
        return np.concatenate([
            (_apply(_rotation_homography(parameters[3 * n : 3 * n + 3], focal, height, width), source)
             - matches[i][1]).ravel()
            for n, (i, source) in enumerate(zip(order, sources))
        ])  # fmt: skip

    # each frame's points depend on its own 3 angles and the focal length only: finite differences of all the
    # frames' first angles at once, and so on (4 evaluations per Jacobian instead of 1 + 3 * frames)
    sparsity = np.zeros((2 * sum(len(source) for source in sources), 3 * len(order) + 1), bool)
    row = 0
    for n, source in enumerate(sources):
        sparsity[row : row + 2 * len(source), 3 * n : 3 * n + 3] = True
        row += 2 * len(source)
    sparsity[:, -1] = True
    lower = np.full(3 * len(order) + 1, -np.inf)
    upper = np.full(3 * len(order) + 1, np.inf)
    lower[-1], upper[-1] = focal_of(HFOV_RANGE[1]), focal_of(HFOV_RANGE[0])
    fit = least_squares(distances, np.append(np.concatenate(start), start_focal), bounds=(lower, upper),
                        loss="soft_l1", f_scale=RANSAC_THRESHOLD / 2, x_scale="jac",
                        jac_sparsity=sparsity)  # fmt: skip
    focal = float(fit.x[-1])
    rotations = {i: _rotation_homography(fit.x[3 * n : 3 * n + 3], focal, height, width) for n, i in enumerate(order)}
    return focal, rotations


def _ecc(template, image, template_mask, image_mask, matrix, motion, iterations) -> tuple[float, np.ndarray]:
    """One ECC run; ``(correlation, matrix)`` (3x3), or ``(-inf, matrix)`` when it does not converge."""
    warp = matrix[:2].astype(np.float32) if motion != cv2.MOTION_HOMOGRAPHY else matrix.astype(np.float32)
    criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, iterations, ECC_EPSILON)
    try:
        rho, warp = cv2.findTransformECCWithMask(template, image, template_mask, image_mask, warp, motion, criteria,
                                                 ECC_BLUR)  # fmt: skip
    except cv2.error:  # "the algorithm stopped before its convergence" or singular Hessian: no texture to use
        return -math.inf, matrix
    result = np.eye(3)
    result[: warp.shape[0]] = warp
    return float(rho), result / result[2, 2]


def _estimate_pair(pair: _Pair, rotation: np.ndarray | None = None) -> tuple[np.ndarray, str, float]:
    """``(template -> input matrix at the estimation scale, model, correlation)`` for one exposure-matched pair.

    Coarse to fine: the Euclidean motion on every pyramid level. Then the camera ``rotation`` (template -> input,
    from :func:`_camera_rotations`) when given, if it correlates nearly as well (:data:`ROTATION_TOLERANCE`) and
    no corner lies further than :data:`MAX_PERSPECTIVE` of the diagonal from the Euclidean motion's. Else, on the
    last-but-one level (the only one for small images) the pixels the Euclidean motion explains worst are masked
    and the homography is fitted from it, then refined on the finest level with few iterations. The homography
    is kept when it is plausible for a turned camera and correlates at least as well as the Euclidean motion on
    the finest level.
    """
    templates = _pyramid(pair.template, COARSE_SIDE)
    images = _pyramid(pair.input, COARSE_SIDE)
    template_masks = _mask_pyramid(pair.template_mask, len(templates))
    image_masks = _mask_pyramid(pair.input_mask, len(images))
    levels = list(zip(templates, images, template_masks, image_masks))
    fine = templates[-1]
    start = _coarse_translation(pair, COARSE_SIDE)  # at the estimation scale
    euclidean = _refine(levels, start, cv2.MOTION_EUCLIDEAN, MAX_STEP, fine.shape)
    if euclidean is None:
        return start, "none", -math.inf
    # The histograms matched before registration describe slightly different views of the scene; with the frames
    # now registered to a pixel, the tone curve is matched again on the part of the scene both show.
    curve = _tone_curve(fine, images[-1], template_masks[-1], image_masks[-1], euclidean)
    images = _pyramid(curve(images[-1]), COARSE_SIDE)
    levels = list(zip(templates, images, template_masks, image_masks))
    if rotation is not None:
        r_rho, rho = (_masked_correlation(fine, images[-1], template_masks[-1], image_masks[-1], m)[0]
                      for m in (rotation, euclidean))  # fmt: skip
        near = _distance(rotation, euclidean, *fine.shape) <= MAX_PERSPECTIVE * math.hypot(*fine.shape)
        if near and r_rho >= rho - ROTATION_TOLERANCE:
            return rotation, "rotation", r_rho
    # What moved in the scene (water, people, a lamp's glow that grows with exposure) breaks the least-squares
    # fit: leave out the pixels the Euclidean motion explains worst, then fit the homography.
    middle = max(0, len(levels) - 2)
    template, image, template_mask, image_mask = levels[middle]
    inliers = _inliers(template, image, template_mask, image_mask,
                       _rescale(euclidean, np.linalg.inv(_level_scale(fine, template))))  # fmt: skip
    masked = [(t, i, m & cv2.resize(inliers, (t.shape[1], t.shape[0]), interpolation=cv2.INTER_NEAREST), im)
              for t, i, m, im in levels[middle:]]  # fmt: skip
    homography = _refine(masked, euclidean, cv2.MOTION_HOMOGRAPHY, MAX_PERSPECTIVE, fine.shape)
    fine_masks = masked[-1][2], image_masks[-1]
    rho = _masked_correlation(fine, images[-1], *fine_masks, euclidean)[0]
    moved = homography is not None and not np.allclose(homography, euclidean, rtol=0, atol=1e-9)
    h_rho = _masked_correlation(fine, images[-1], *fine_masks, homography)[0] if moved else -1.0
    if moved and h_rho >= rho and _handheld(homography, *fine.shape):
        model, matrix = "homography", homography
    else:
        model, matrix = "euclidean", euclidean
    return matrix, model, _masked_correlation(fine, images[-1], template_masks[-1], image_masks[-1], matrix)[0]


def _refine(levels, start: np.ndarray, motion: int, first_reach: float, fine: tuple[int, int]) -> np.ndarray | None:
    """ECC of ``motion`` over ``levels`` (coarse first: ``(template, image, template_mask, image_mask)``) from
    ``start``, a matrix at the scale of a ``fine`` ``(height, width)`` image; the result at that scale, or
    ``None`` when ECC converged on no level (too little texture).

    A level may only refine: with little valid area (a frame nearly black or white) ECC can wander off, so a
    step is not taken when it moves a corner further than ``first_reach`` (on the first level) or
    :data:`MAX_STEP` (later) times the level's diagonal, or when it moves one more than a pixel and lowers the
    correlation.
    """
    matrix, converged = start, False
    for number, (template, image, template_mask, image_mask) in enumerate(levels):
        scale = _scale_matrix(fine[1] / template.shape[1], fine[0] / template.shape[0])
        level_start = _rescale(matrix, np.linalg.inv(scale))
        iterations = ECC_ITERATIONS if number == 0 else ECC_REFINE_ITERATIONS
        rho, result = _ecc(template, image, template_mask, image_mask, level_start, motion, iterations)
        if not math.isfinite(rho):
            continue
        converged = True
        step = _distance(result, level_start, *template.shape)
        if step > (first_reach if number == 0 else MAX_STEP) * math.hypot(*template.shape):
            continue
        if step > 1 and _masked_correlation(template, image, template_mask, image_mask, result)[0] < \
                _masked_correlation(template, image, template_mask, image_mask, level_start)[0]:  # fmt: skip
            continue
        matrix = _rescale(result, scale)
    return matrix if converged else None


def _distance(a: np.ndarray, b: np.ndarray, height: int, width: int) -> float:
    """How far apart two homographies put the corners of a ``height x width`` image (pixels, the largest)."""
    corners = _corners(height, width)
    return float(np.linalg.norm(_apply(a, corners) - _apply(b, corners), axis=1).max())


def _handheld(matrix: np.ndarray, height: int, width: int) -> bool:
    """Whether a homography looks like a turned camera: no corner further than :data:`MAX_PERSPECTIVE` of the
    diagonal from the affine map that agrees with it at the centre, and no shear or stretch beyond
    :data:`MAX_SCALE` there (a rotating camera's local map is a rotation and a scale)."""
    centre = np.array([(width - 1) / 2, (height - 1) / 2, 1.0])
    h = matrix / (matrix[2] @ centre)
    moved = h[:2] @ centre
    jacobian = h[:2, :2] - np.outer(moved, h[2, :2])
    affine = np.eye(3)
    affine[:2, :2] = jacobian
    affine[:2, 2] = moved - jacobian @ centre[:2]
    corners = _corners(height, width)
    bend = np.abs(_apply(matrix, corners) - _apply(affine, corners)).max()
    stretch = np.linalg.svd(jacobian, compute_uv=False)
    return bool(bend <= MAX_PERSPECTIVE * math.hypot(height, width) and stretch[0] / stretch[1] - 1 <= MAX_SCALE)


def _tone_curve(template, image, template_mask, image_mask, matrix, bins: int = 1024):
    """The monotone curve that gives ``image``'s pixels the histogram of the ``template`` pixels they face once
    ``image`` is warped by ``matrix`` (template -> image pixels), both over the pixels valid in both: the same
    part of the scene on both sides, unlike the whole frames' histograms before registration."""
    size = (template.shape[1], template.shape[0])
    warped = cv2.warpPerspective(image, matrix, size, flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                 borderMode=cv2.BORDER_REPLICATE)  # fmt: skip
    covered = cv2.warpPerspective(image_mask, matrix, size, flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP)
    valid = (template_mask > 0) & (covered > 0)
    if valid.sum() < 100:
        return lambda x: x

    def cdf(values: np.ndarray) -> np.ndarray:
        index = np.minimum((values * bins).astype(np.int64), bins - 1)
        return np.cumsum(np.bincount(index, minlength=bins)) / values.size

    source, target = cdf(warped[valid]), cdf(template[valid])
    edges = np.arange(1, bins + 1) / bins  # the upper edge of each bin: where its cumulative count is reached
    levels = np.interp(source, target, edges).astype(np.float32)

    def curve(x: np.ndarray) -> np.ndarray:
        return np.interp(x, edges, levels).astype(np.float32)

    return curve


def _masked_correlation(template, image, template_mask, image_mask, matrix) -> tuple[float, np.ndarray, np.ndarray]:
    """``(correlation, difference, valid)``: the correlation coefficient of ``template`` and ``image`` warped by
    ``matrix`` (template -> image pixels) over the pixels valid in both; their difference after standardising
    both over those pixels, and the boolean map of those pixels. Correlation -1 when fewer than 100 are valid.
    Both images are smoothed as ECC smooths them (5 x 5 Gaussian), so that this agrees with what ECC optimised."""
    size = (template.shape[1], template.shape[0])
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    template = cv2.GaussianBlur(template, (ECC_BLUR, ECC_BLUR), 0)
    warped = cv2.warpPerspective(cv2.GaussianBlur(image, (ECC_BLUR, ECC_BLUR), 0), matrix, size, flags=flags,
                                 borderMode=cv2.BORDER_REPLICATE)  # fmt: skip
    covered = cv2.warpPerspective(image_mask, matrix, size, flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP)
    valid = (template_mask > 0) & (covered > 0)
    if valid.sum() < 100:
        return -1.0, np.zeros_like(template), valid
    a, b = template[valid], warped[valid]
    a_mean, b_mean, a_std, b_std = a.mean(), b.mean(), a.std() + 1e-6, b.std() + 1e-6
    rho = float(((a - a_mean) * (b - b_mean)).mean() / (a_std * b_std))
    return rho, (template - a_mean) / a_std - (warped - b_mean) / b_std, valid


def _inliers(template, image, template_mask, image_mask, matrix) -> np.ndarray:
    """``template_mask`` without the pixels whose local residual after ``matrix`` is an outlier (above the
    median plus 3 robust standard deviations); unchanged if that would leave out most of the pixels."""
    _, difference, valid = _masked_correlation(template, image, template_mask, image_mask, matrix)
    if valid.sum() < 100:
        return template_mask
    energy = cv2.GaussianBlur(np.abs(difference), (0, 0), 2.0)
    values = energy[valid]
    median = float(np.median(values))
    spread = 1.4826 * float(np.median(np.abs(values - median)))
    keep = valid & (energy <= median + 3 * spread)
    if keep.sum() < 0.3 * valid.sum():
        return template_mask
    return (keep | ((template_mask > 0) & ~valid)).astype(np.uint8)


def _textured(pair: _Pair) -> bool:
    """Whether the pair's brighter image has enough unclipped pixels with visible gradients to register."""
    grey = cv2.GaussianBlur(pair.input, (0, 0), 1.0)
    gx, gy = cv2.Sobel(grey, cv2.CV_32F, 1, 0), cv2.Sobel(grey, cv2.CV_32F, 0, 1)
    strong = (np.hypot(gx, gy) > 0.02) & (pair.input_mask > 0)
    return float(strong.mean()) >= MIN_TEXTURE


def estimate_motion(
    frames: torch.Tensor,
    reference: int | None = None,
    names: Sequence[str] | None = None,
) -> list[Motion]:
    """Each frame's motion relative to the reference frame (the module docstring says how).

    Args:
        frames: ``(N, 3, H, W)`` in ``[0, 1]``, any exposure order.
        reference: index of the reference frame (default: :func:`reference_frame`, the one nearest mid-grey).
        names: the frames' names for messages (default ``frame 0``, ``frame 1``, ...).

    Returns:
        One :class:`Motion` per frame, in input order; frames that cannot be aligned have ``aligned=False`` and
        a ``problem``. Emits no warnings (:func:`align_frames` does).
    """
    _check(frames)
    count, _, height, width = frames.shape
    names = _names(names, count)
    reference = reference_frame(frames) if reference is None else _check_reference(reference, count)
    size = _estimate_size(height, width, ESTIMATE_SIDE)
    to_full = _scale_matrix(width / size[0], height / size[1])
    greys = [_grey(frame, size) for frame in frames]

    def register(base: int, index: int, base_matrix: np.ndarray, via: str = "", camera=None) -> Motion:
        """Frame ``index`` against frame ``base``, whose own motion is ``base_matrix`` (reference -> base);
        ``camera``: the frame's camera rotation (reference -> frame at the estimation scale), if known."""
        pair = _matched_pair(greys[base], greys[index])
        if not _textured(pair):
            return _failed(names[index], "too little texture to register")
        if camera is not None and not pair.template_is_reference:
            camera = np.linalg.inv(camera)
        matrix, model, rho = _estimate_pair(pair, camera)
        step = _rescale(matrix if pair.template_is_reference else np.linalg.inv(matrix), to_full)  # base -> index
        full = step @ base_matrix
        full /= full[2, 2]
        dx, dy, rotation, scale = _describe_matrix(full, height, width)
        problem = _implausible(model, rho, dx, dy, rotation, scale, height, width, names[base])
        if problem:
            return _failed(names[index], problem, dx, dy, rotation, rho, full)
        return Motion(names[index], dx, dy, rotation, model, rho, matrix=full, via=via)

    # OpenCV releases the GIL and parallelises little inside ECC: frames (features) and pairs (ECC) in parallel
    # use the cores. The camera rotations are fitted to all frames' features at once (one focal length).
    with ThreadPoolExecutor(max_workers=max(1, min(count - 1, cv2.getNumberOfCPUs()))) as pool:
        features = list(pool.map(_features, greys))
        matches = {i: match for i in range(count) if i != reference
                   and (match := _feature_matches(features[reference], features[i])) is not None}  # fmt: skip
        cameras = _camera_rotations(matches, size[1], size[0])[1] if matches else {}
        motions = list(pool.map(lambda i: register(reference, i, np.eye(3), camera=cameras.get(i))
                                if i != reference else Motion(names[i], 0.0, 0.0, 0.0, "reference", 1.0),
                                range(count)))  # fmt: skip
    # A frame far from the reference in exposure (nearly black or white but for its highlights or shadows) may
    # share too little with it: register it to its aligned neighbour in exposure too, as a chain, and keep that
    # when it correlates better.
    brightness = [float(grey[0].mean()) for grey in greys]
    for side in (-1, 1):  # darker frames, then brighter ones, each from the reference outwards
        chain = sorted((i for i in range(count) if (brightness[i] - brightness[reference]) * side > 0),
                       key=lambda i: abs(brightness[i] - brightness[reference]))  # fmt: skip
        neighbour = reference
        for index in chain:
            weak = not motions[index].aligned or motions[index].correlation < CHAIN_BELOW
            if weak and neighbour != reference:
                retry = register(neighbour, index, motions[neighbour].matrix, via=names[neighbour])
                if retry.aligned and (not motions[index].aligned or retry.correlation > motions[index].correlation):
                    motions[index] = retry
            if motions[index].aligned:
                neighbour = index
    return motions


def _implausible(model, rho, dx, dy, rotation, scale, height, width, base) -> str:
    if model == "none":
        return f"no registration converged (too little texture shared with {base}?)"
    if rho < MIN_CORRELATION:
        return f"correlation with {base} {rho:.2f} < {MIN_CORRELATION} (another scene, or no shared detail)"
    if abs(dx) > MAX_SHIFT * width or abs(dy) > MAX_SHIFT * height:
        return f"shift ({dx:+.0f}, {dy:+.0f}) px is more than {MAX_SHIFT:.0%} of the frame"
    if abs(rotation) > MAX_ROTATION:
        return f"rotation {rotation:+.1f} deg is more than {MAX_ROTATION:g} deg"
    if abs(scale - 1) > MAX_SCALE:
        return f"scale change {scale:.3f} is more than {MAX_SCALE:.0%}"
    return ""


def _failed(name, problem, dx=0.0, dy=0.0, rotation=0.0, rho=-math.inf, matrix=None) -> Motion:
    rho = rho if math.isfinite(rho) else 0.0
    return Motion(name, dx, dy, rotation, "none", rho, aligned=False, problem=problem,
                  matrix=np.eye(3) if matrix is None else matrix)  # fmt: skip


# ------------------------------------------------------------------------------------------ crop and warp

def common_crop(matrices: Sequence[np.ndarray], height: int, width: int) -> tuple[int, int, int, int]:
    """The largest axis-aligned rectangle of reference pixels that every frame covers.

    Args:
        matrices: ``(3, 3)`` reference -> frame pixel maps (the reference's own is the identity).
        height, width: the frames' size.

    Returns:
        ``(x, y, width, height)``: for every pixel inside, each map lands inside the frame (at most half a pixel
        beyond its outer pixel centres, where the warp repeats the edge pixel).

    Raises:
        LoopExposeError: when the frames share no region at all.
    """
    # The region frame i covers is the preimage of its rectangle: a convex quadrilateral; their intersection is
    # convex, so a rectangle lies inside it when its top and bottom rows do (a convex region's row intervals
    # shrink monotonically away from its widest row): hand-written, OpenCV has no largest-inscribed-rectangle.
    region = _corners(height, width)[:, :2].astype(np.float32)
    # a frame covers its pixels' area: half a pixel beyond its outer pixel centres (filled from the edge pixel)
    outline = np.array([[-0.5, -0.5, 1], [width - 0.5, -0.5, 1], [width - 0.5, height - 0.5, 1],
                        [-0.5, height - 0.5, 1]])  # fmt: skip
    for matrix in matrices:
        quad = _apply(np.linalg.inv(matrix), outline).astype(np.float32)
        overlap, region = cv2.intersectConvexConvex(region, quad)
        if overlap <= 1 or region is None:
            raise LoopExposeError("the aligned frames share no common region")
        region = region.reshape(-1, 2)
    polygon = region.astype(np.float64)
    rows = np.unique(np.linspace(math.ceil(polygon[:, 1].min() - 1e-3), math.floor(polygon[:, 1].max() + 1e-3),
                                 min(height, 512)).round().astype(int))  # fmt: skip
    left, right = _row_spans(polygon, rows)
    lo = np.ceil(np.maximum(left[:, None], left[None, :]) - 1e-3)  # float32 polygons: a thousandth of slack
    hi = np.floor(np.minimum(right[:, None], right[None, :]) + 1e-3)
    spans = rows[None, :] - rows[:, None] + 1
    area = np.where((spans > 0) & (hi >= lo), (hi - lo + 1) * spans, 0)
    top, bottom = np.unravel_index(int(np.argmax(area)), area.shape)
    if area[top, bottom] <= 0:
        raise LoopExposeError("the aligned frames share no common region")
    x0, x1 = int(lo[top, bottom]), int(hi[top, bottom])
    return x0, int(rows[top]), x1 - x0 + 1, int(rows[bottom] - rows[top] + 1)


def _row_spans(polygon: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(left, right)`` x extent of a convex polygon ``(K, 2)`` on each row (``-inf``/``inf``-free; empty rows
    get ``left > right``)."""
    start, end = polygon, np.roll(polygon, -1, axis=0)
    y = rows[:, None].astype(np.float64)
    dy = end[:, 1] - start[:, 1]
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (y - start[:, 1]) / dy
        x = start[:, 0] + t * (end[:, 0] - start[:, 0])
    crossing = (dy != 0) & (t >= -1e-9) & (t <= 1 + 1e-9)
    flat = (dy == 0) & (np.abs(y - start[:, 1]) < 1e-9)  # a horizontal edge on the row: both its ends count
    lows = np.where(crossing, x, np.where(flat, np.minimum(start[:, 0], end[:, 0]), np.inf))
    highs = np.where(crossing, x, np.where(flat, np.maximum(start[:, 0], end[:, 0]), -np.inf))
    return lows.min(axis=1), highs.max(axis=1)


def warp_frames(
    frames: torch.Tensor, matrices: Sequence[np.ndarray], crop: tuple[int, int, int, int]
) -> torch.Tensor:
    """Each frame resampled (bicubic, OpenCV) onto the reference's pixels inside ``crop``.

    Args:
        frames: ``(N, 3, H, W)`` in ``[0, 1]``.
        matrices: ``N`` reference -> frame pixel maps ``(3, 3)``; an identity map is a plain crop.
        crop: ``(x, y, width, height)`` in reference pixels.

    Returns:
        ``(N, 3, height, width)`` in ``[0, 1]``, float32 on the CPU.
    """
    x, y, width, height = crop
    source = frames.detach().to("cpu", torch.float32).contiguous()
    out = torch.empty((len(frames), 3, height, width), dtype=torch.float32)
    offset = np.array([[1, 0, x], [0, 1, y], [0, 0, 1]], np.float64)
    for index, matrix in enumerate(matrices):
        if np.allclose(matrix, np.eye(3), atol=1e-12):
            out[index] = source[index, :, y : y + height, x : x + width]
            continue
        inverse_map = matrix @ offset  # output pixel -> frame pixel
        for channel in range(3):
            cv2.warpPerspective(source[index, channel].numpy(), inverse_map, (width, height),
                                dst=out[index, channel].numpy(), flags=WARP_INTERPOLATION | cv2.WARP_INVERSE_MAP,
                                borderMode=cv2.BORDER_REPLICATE)  # fmt: skip
    return out.clamp_(0, 1)


def align_frames(
    frames: torch.Tensor,
    reference: int | None = None,
    names: Sequence[str] | None = None,
) -> Alignment:
    """Register every frame of a bracket to the reference frame, warp it there, and crop the borders.

    Args:
        frames: ``(N, 3, H, W)`` in ``[0, 1]``, any exposure order, any device and float dtype.
        reference: index of the reference frame (default: the one nearest mid-grey, :func:`reference_frame`).
        names: the frames' names for warnings (default ``frame 0``, ``frame 1``, ...).

    Returns:
        An :class:`Alignment`: the aligned frames cropped to the common rectangle (frames that cannot be aligned
        left out), the crop, and every frame's :class:`Motion`.

    Warns:
        AlignmentWarning: one per frame that cannot be aligned, naming it and saying why.

    Raises:
        LoopExposeError: frames that are not ``(N, 3, H, W)`` floats, a reference index out of range.

    Example: two windows of one scene, the second one stop darker and seen 2 px further right, 3 px higher:

        >>> scene = torch.nn.functional.interpolate(torch.rand(1, 3, 40, 60), scale_factor=2, mode="bilinear")
        >>> frames = torch.cat([scene[..., 8:72, 10:110], 0.5 * scene[..., 5:69, 12:112]])
        >>> result = align_frames(frames)
        >>> [(round(m.dx, 1), round(m.dy, 1), m.aligned) for m in result.motions]
        [(0.0, 0.0, True), (-2.0, 3.0, True)]
        >>> result.crop, tuple(result.frames.shape)
        ((2, 0, 98, 61), (2, 3, 61, 98))
    """
    motions = estimate_motion(frames, reference, names)
    reference = next(i for i, motion in enumerate(motions) if motion.model == "reference")
    for motion in motions:
        if not motion.aligned:
            warnings.warn(f"{motion.name}: cannot be aligned, left out: {motion.problem}", AlignmentWarning,
                          stacklevel=2)  # fmt: skip
    kept = [i for i, motion in enumerate(motions) if motion.aligned]
    height, width = frames.shape[-2:]
    matrices = [motions[i].matrix for i in kept]
    crop = common_crop(matrices, height, width)
    source = frames if len(kept) == len(frames) else frames[kept]
    aligned = warp_frames(source, matrices, crop).to(frames.device, frames.dtype)
    return Alignment(aligned, kept, reference, crop, motions)


# ------------------------------------------------------------------------------------------ checks

def _check(frames: torch.Tensor) -> None:
    if not isinstance(frames, torch.Tensor) or frames.ndim != 4 or frames.shape[1] != 3:
        shape = tuple(frames.shape) if isinstance(frames, torch.Tensor) else type(frames).__name__
        raise LoopExposeError(f"alignment takes one bracket of frames (N, 3, H, W), got {shape}")
    if not frames.is_floating_point():
        raise LoopExposeError(f"alignment takes float frames in [0, 1], got {frames.dtype}")
    if min(frames.shape[-2:]) < 16:
        raise LoopExposeError(f"frames of {frames.shape[-1]}x{frames.shape[-2]} are too small to align (16 px a side)")


def _check_reference(reference: int, count: int) -> int:
    if not -count <= reference < count:
        raise LoopExposeError(f"reference frame {reference} is out of range for {count} frames")
    return reference % count


def _names(names: Sequence[str] | None, count: int) -> list[str]:
    if names is None:
        return [f"frame {i}" for i in range(count)]
    if len(names) != count:
        raise LoopExposeError(f"{len(names)} names for {count} frames")
    return [str(name) for name in names]
