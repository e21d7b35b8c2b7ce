"""The API's input contract (:mod:`loopexpose.inputs`), by property: every accepted input of ``model.correct``
and ``loopexpose.fuse`` comes back of the same kind, shape and dtype (and, through the identity model, with the
same values: the scale was read right); every rejected one raises ``LoopExposeError`` naming what was given.

Hypothesis runs derandomised (the same examples every run) with a bounded number of examples on tiny images.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image

import loopexpose
from loopexpose.errors import LoopExposeError
from loopexpose.inputs import FLOAT_SLACK
from loopexpose.models import ExposureModel, create

PROPERTY = settings(
    max_examples=30, derandomize=True, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
class Identity(ExposureModel):
    """Gives every image back: the base class's conversions alone decide what comes out, so output == input
    (up to the float path's 16-bit rounding) shows each kind's scale was read right."""

    arch = "identity-test"

    def __init__(self) -> None:
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(()))  # gives the model a device

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"output": x, "luminance": x.mean((1, 2, 3))}


IDENTITY = Identity().eval()
MODEL = create("curvegrid", {"thumb": 32, "width": 8, "grid": 4, "bins": 4, "knots": 8}).eval()  # a real, fast one


ACCEPTED_ARRAY_DTYPES = [np.uint8, np.uint16, np.float16, np.float32, np.float64]
REFUSED_ARRAY_DTYPES = [np.int8, np.int16, np.int32, np.int64, np.uint32, np.uint64, np.bool_, np.complex64,
                        np.complex128]  # fmt: skip
sides = st.integers(1, 9)


def _elements(dtype):
    dtype = np.dtype(dtype)
    if dtype.kind == "u":
        return st.integers(0, np.iinfo(dtype).max)
    return st.floats(0, 1, width=8 * min(dtype.itemsize, 8))


@st.composite
def accepted_arrays(draw, dtypes=ACCEPTED_ARRAY_DTYPES):
    dtype = draw(st.sampled_from(dtypes))
    shape = (draw(sides), draw(sides), 3)
    return draw(hnp.arrays(dtype, shape, elements=_elements(dtype)))


def _tolerance(dtype) -> float:
    """How far the identity model may move a value: integers are exact (look-up tables), floats are rounded to
    16 bits on the CPU path, float16 has its own rounding."""
    return {"u": 0, "f": 1e-3 if np.dtype(dtype).itemsize == 2 else 2 / 65535}[np.dtype(dtype).kind]


# ------------------------------------------------------------------------------------------- accepted


@PROPERTY
@given(accepted_arrays())
def test_accepted_arrays_keep_kind_shape_dtype_and_scale(image):
    out = IDENTITY.correct(image)
    assert isinstance(out, np.ndarray) and out.shape == image.shape and out.dtype == image.dtype
    assert np.abs(out.astype(np.float64) - image.astype(np.float64)).max() <= _tolerance(image.dtype)
    changed = MODEL.correct(image)
    assert changed.shape == image.shape and changed.dtype == image.dtype
    if image.dtype.kind == "f":
        assert np.isfinite(changed).all() and 0 <= changed.min() and changed.max() <= 1


@PROPERTY
@given(accepted_arrays([np.float32, np.float64]), st.floats(-FLOAT_SLACK, 1 + FLOAT_SLACK))
def test_floats_a_little_outside_0_1_are_clipped(image, value):
    image = image.copy()
    image[0, 0, 0] = value
    out = IDENTITY.correct(image)
    assert out.dtype == image.dtype and 0 <= out.min() and out.max() <= 1


@PROPERTY
@given(
    st.sampled_from([torch.uint8, torch.float16, torch.bfloat16, torch.float32, torch.float64]),
    st.lists(st.integers(1, 2), max_size=2),
    sides,
    sides,
    st.integers(0, 2**31 - 1),
)
def test_accepted_tensors_keep_kind_shape_dtype_and_scale(dtype, lead, height, width, seed):
    generator = torch.Generator().manual_seed(seed)
    shape = (*lead, 3, height, width)
    if dtype == torch.uint8:
        image = torch.randint(0, 256, shape, generator=generator, dtype=torch.uint8)
    else:
        image = torch.rand(shape, generator=generator).to(dtype)
    out = IDENTITY.correct(image)
    assert isinstance(out, torch.Tensor) and out.shape == image.shape and out.dtype == image.dtype
    tolerance = {torch.uint8: 0.0, torch.float16: 1e-3, torch.bfloat16: 8e-3}.get(dtype, 2 / 65535)
    assert (out.double() - image.double()).abs().max() <= tolerance
    assert MODEL.correct(image).dtype == dtype


@PROPERTY
@given(st.sampled_from(["RGB", "L", "RGBA", "LA", "P", "1", "CMYK", "I;16"]), sides, sides, st.integers(0, 2**31 - 1))
def test_accepted_pil_images_keep_kind_size_and_mode(mode, width, height, seed):
    rng = np.random.default_rng(seed)
    if mode == "I;16":
        image = Image.fromarray(rng.integers(0, 65536, (height, width)).astype(np.uint16))
    else:
        image = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).convert(mode)
    out = IDENTITY.correct(image)
    assert isinstance(out, Image.Image) and out.size == image.size
    assert out.mode == (mode if mode in ("RGB", "L", "RGBA", "LA", "I;16") else "RGB")
    if mode in ("L", "I;16", "RGB"):  # the scale was read right: the identity gives the image back
        assert np.abs(np.asarray(out).astype(np.int64) - np.asarray(image).astype(np.int64)).max() <= 1
    if mode in ("RGBA", "LA"):  # alpha is kept as it was
        assert np.array_equal(np.asarray(out)[..., -1], np.asarray(image)[..., -1])
    assert MODEL.correct(image).mode == out.mode


@PROPERTY
@given(st.sampled_from(ACCEPTED_ARRAY_DTYPES), st.integers(2, 4), st.integers(4, 12), st.integers(4, 12), st.data())
def test_fuse_keeps_the_frames_dtype(dtype, n, height, width, data):
    frame = hnp.arrays(dtype, (height, width, 3), elements=_elements(dtype))
    frames = [data.draw(frame) for _ in range(n)]
    fused = loopexpose.fuse(frames)
    assert isinstance(fused, np.ndarray) and fused.shape == (height, width, 3) and fused.dtype == np.dtype(dtype)
    assert loopexpose.fuse(frames, model=MODEL).dtype == np.dtype(dtype)


def test_sixteen_bit_grey_and_uint8_tensors_are_read_at_their_scale():
    grey = np.linspace(0, 65535, 12 * 16).reshape(12, 16).astype(np.uint16)
    out = MODEL.correct(Image.fromarray(grey))
    as_rgb = MODEL.correct(np.repeat(grey[..., None], 3, axis=2))
    luma = as_rgb.astype(np.float32) @ np.float32([0.299, 0.587, 0.114])
    assert np.abs(np.asarray(out).astype(np.float32) - luma).max() <= 1
    pixels = torch.randint(0, 256, (3, 10, 14), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    as_float = MODEL.correct(pixels.float() / 255)
    assert (MODEL.correct(pixels).float() - as_float * 255).abs().max() <= 0.5 + 1e-3
    tensor_frames = torch.stack([pixels, pixels // 2, (pixels.int() * 2).clamp(max=255).byte()])
    fused = loopexpose.fuse(tensor_frames)
    assert fused.dtype == torch.uint8
    assert (fused.float() - loopexpose.fuse(tensor_frames.float() / 255) * 255).abs().max() <= 0.5 + 1e-3


# ------------------------------------------------------------------------------------------- rejected


@PROPERTY
@given(st.sampled_from(REFUSED_ARRAY_DTYPES), sides, sides)
def test_refused_dtypes_name_what_was_given(dtype, height, width):
    image = np.zeros((height, width, 3), dtype)
    with pytest.raises(LoopExposeError, match=f"{np.dtype(dtype).name} array of shape"):
        MODEL.correct(image)
    with pytest.raises(LoopExposeError, match=np.dtype(dtype).name):
        loopexpose.fuse([image, image])
    with pytest.raises(LoopExposeError, match="object array"):
        MODEL.correct(np.zeros((height, width, 3), dtype=object))


@PROPERTY
@given(
    accepted_arrays([np.float16, np.float32, np.float64]),
    st.one_of(
        st.floats(allow_nan=True, allow_infinity=True).filter(lambda v: not -FLOAT_SLACK <= v <= 1 + FLOAT_SLACK),
        st.sampled_from([np.nan, np.inf, -np.inf, 255.0, -1.0]),
    ),
)
def test_floats_outside_0_1_and_nan_are_refused(image, value):
    image = image.copy()
    with np.errstate(over="ignore"):
        image[-1, -1, -1] = value
    if np.isfinite(image).all() and -FLOAT_SLACK <= image.min() and image.max() <= 1 + FLOAT_SLACK:
        return  # the value was rounded into range by a narrow dtype (float16)
    with pytest.raises(LoopExposeError, match="NaN or infinite|must lie in \\[0, 1\\]"):
        MODEL.correct(image)
    with pytest.raises(LoopExposeError, match="frame 1"):
        loopexpose.fuse([np.zeros_like(image), image])
    with np.errstate(over="ignore"):  # float64 beyond float32's range becomes inf: still refused
        tensor = torch.from_numpy(image.astype(np.float32)).permute(2, 0, 1)
    with pytest.raises(LoopExposeError, match="float32 tensor"):
        MODEL.correct(tensor)


@PROPERTY
@given(st.lists(st.integers(0, 5), min_size=0, max_size=4), st.sampled_from(ACCEPTED_ARRAY_DTYPES))
def test_wrong_shapes_and_empty_images_are_refused(shape, dtype):
    shape = tuple(shape)
    if len(shape) == 3 and shape[2] == 3 and 0 not in shape:
        return  # an accepted shape
    with pytest.raises(LoopExposeError, match="expected an \\(H, W, 3\\)|empty"):
        MODEL.correct(np.zeros(shape, dtype))


@PROPERTY
@given(st.sampled_from([torch.int8, torch.int16, torch.int32, torch.int64, torch.bool, torch.complex64]), sides)
def test_refused_tensor_dtypes(dtype, side):
    with pytest.raises(LoopExposeError, match=str(dtype).removeprefix("torch.") + " tensor"):
        MODEL.correct(torch.zeros(3, side, side, dtype=dtype))
    with pytest.raises(LoopExposeError, match="tensor"):
        loopexpose.fuse(torch.zeros(2, 3, side, side, dtype=dtype))


@PROPERTY
@given(st.sampled_from(ACCEPTED_ARRAY_DTYPES), st.sampled_from(ACCEPTED_ARRAY_DTYPES))
def test_fuse_refuses_mixed_dtypes(first, second):
    frames = [np.zeros((6, 8, 3), first), np.zeros((6, 8, 3), second)]
    if first == second:
        assert loopexpose.fuse(frames).dtype == np.dtype(first)
    else:
        with pytest.raises(LoopExposeError, match="mixed dtypes"):
            loopexpose.fuse(frames)


@pytest.mark.parametrize("mode", ["F", "I"])
def test_pil_images_without_a_white_level_are_refused(mode):
    image = Image.new(mode, (8, 6))
    with pytest.raises(LoopExposeError, match=f"mode '{mode}'"):
        MODEL.correct(image)
    with pytest.raises(LoopExposeError, match=f"mode '{mode}'"):
        loopexpose.fuse([image, image])
    with pytest.raises(LoopExposeError, match="mixed dtypes"):
        loopexpose.fuse([Image.new("RGB", (8, 6)), Image.new("I;16", (8, 6))])


def test_empty_and_non_image_objects_are_refused():
    for image in (np.zeros((0, 0, 3), np.uint8), torch.zeros(3, 0, 4), Image.new("RGB", (0, 0))):
        with pytest.raises(LoopExposeError, match="empty"):
            MODEL.correct(image)
    for thing in ([[1, 2, 3]], "photo.jpg", None, 3.0):
        with pytest.raises(LoopExposeError, match="cannot correct an object of type"):
            MODEL.correct(thing)
    with pytest.raises(LoopExposeError, match="mixed kinds"):
        loopexpose.fuse([np.zeros((4, 4, 3), np.uint8), Image.new("RGB", (4, 4))])
