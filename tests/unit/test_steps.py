from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from boneage.data.synthetic import phantom_hand, synthetic_film
from boneage.errors import BoneAgeError
from boneage.preprocess.hand import finger_gaps, localise_hand
from boneage.preprocess.steps import (
    Clahe,
    CropHand,
    Fit,
    Pad,
    Pipeline,
    Scale,
    Squash,
    ToUint8,
    seed_pipeline,
    thumbnail_pipeline,
)


def contains(outer, inner) -> bool:
    return outer[0] <= inner[0] and outer[1] <= inner[1] and outer[2] >= inner[2] and \
        outer[3] >= inner[3]


@pytest.mark.parametrize("border", [0, 40, 120])
@pytest.mark.parametrize("seed", [0, 3])
def test_crop_finds_hand_despite_marker_text_and_border(seed, border):
    film, hand = synthetic_film(height=1100, width=850, seed=seed, border=border)
    box = localise_hand(film)
    assert box.found
    assert contains(box.as_list(), hand)
    # the "L" marker (left edge, at 6% of the width) and the top-right text are left out
    assert box.x0 > 0.06 * 850 + 60
    assert box.y0 > 0.06 * 1100
    assert (box.x1 - box.x0) * (box.y1 - box.y0) < 0.7 * film.size


def test_crop_keeps_the_fingertips_of_a_faint_tightly_cropped_film():
    # as most `rsna-val-fullres` films: cropped close around the hand by hand, and faint
    # (about 20 grey levels between the 1st and 99th percentile)
    film, (x0, y0, x1, y1) = synthetic_film(height=1100, width=850, seed=2, marker=False)
    pad = 20
    tight = film[y0 - pad:, x0 - pad:x1 + pad].astype(np.float32)
    faint = np.round(90 + tight * (24 / 255)).astype(np.uint8)
    box = localise_hand(faint)
    assert box.found
    # the fingertips (top) and the outer fingers (sides) stay in the box (a fixed flatness
    # bound trimmed about twice the padding from each side)
    assert box.y0 <= 2 * pad and box.x0 <= 2 * pad and box.x1 >= faint.shape[1] - 2 * pad


def test_a_bright_marker_on_a_faint_film_does_not_hide_the_hand_from_the_shape_check():
    # a faint hand (about 25 grey levels above its background) filling a tightly cropped film,
    # with a small saturated "L" marker: Otsu's threshold went between the marker and the
    # rest, and the marker was the object whose fingers were counted (RSNA film 3440, warned
    # "not a hand radiograph")
    film, (x0, y0, x1, y1) = synthetic_film(height=1100, width=850, seed=2, marker=False)
    pad = 20
    tight = film[y0 - pad:, x0 - pad:x1 + pad].astype(np.float32)
    faint = np.round(40 + tight * (25 / 255)).astype(np.uint8)
    h, w = faint.shape
    faint[h - 120:h - 40, 10:60] = 255
    assert finger_gaps(faint) >= 3
    # the same marker on a film with no hand finds no fingers either way
    blank = np.full((h, w), 45, np.uint8)
    blank[h - 120:h - 40, 10:60] = 255
    assert finger_gaps(blank) < 3


def test_crop_falls_back_on_flat_image():
    meta: dict = {}
    out = CropHand()(np.full((300, 200), 80, np.uint8), meta)
    assert out.shape == (300, 200)
    assert meta["crop_fallback"] is True and meta["crop_box"] == [0, 0, 200, 300]


def _film_with(draw) -> np.ndarray:
    img = np.full((900, 700), 20, np.uint8)
    draw(img)
    return cv2.GaussianBlur(img, (0, 0), 3)


def test_finger_gaps_tell_hands_from_other_shapes():
    # hands (drawn): four gaps between five fingers, whatever the size and border
    assert finger_gaps(phantom_hand()) >= 3
    assert finger_gaps(phantom_hand(1600, 1200, seed=3)) >= 3
    assert finger_gaps(synthetic_film(seed=1, border=40)[0]) >= 3
    # a chest-like blob, a long bone, a blank film, a ramp: no fingers
    chest = _film_with(lambda a: cv2.ellipse(a, (350, 450), (280, 360), 0, 0, 360, 150, -1))
    bone = _film_with(lambda a: cv2.rectangle(a, (300, 50), (400, 850), 180, -1))
    ramp = np.tile(np.linspace(0, 255, 700), (900, 1)).astype(np.uint8)
    for img in (chest, bone, np.full((900, 700), 90, np.uint8), ramp):
        assert finger_gaps(img) < 3


def test_to_uint8_stretches_16_bit_only():
    a = np.array([[1000, 2000], [3000, 5000]], np.uint16)
    assert ToUint8()(a, {}).tolist() == [[0, 64], [128, 255]]
    b = np.array([[3, 9]], np.uint8)
    assert ToUint8()(b, {}) is b


def test_clahe_matches_opencv_and_is_configurable():
    img = np.random.default_rng(1).integers(0, 120, (64, 64), dtype=np.uint8)
    ref = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8)).apply(img)
    assert np.array_equal(Clahe()(img, {}), ref)
    assert not np.array_equal(Clahe(clip_limit=4.0, tile_grid=4)(img, {}), ref)


def test_letterbox_preserves_aspect():
    img = np.full((200, 100), 255, np.uint8)
    fitted = Fit(64)(img, {})
    assert fitted.shape == (64, 32)
    out = Pad(64)(fitted, {})
    assert out.shape == (64, 64)
    cols = np.nonzero(out.max(axis=0))[0]
    assert cols.min() == 16 and cols.max() == 47  # 32 px wide, centred


def test_area_resize_close_to_inter_area():
    from boneage.preprocess.steps import area_resize

    img = cv2.GaussianBlur(np.random.default_rng(3).integers(0, 255, (1500, 1100), np.uint8),
                           (0, 0), 4)
    ref = cv2.resize(img, (187, 255), interpolation=cv2.INTER_AREA)
    assert np.abs(area_resize(img, (187, 255)).astype(int) - ref).mean() < 1.0


def test_pad_rejects_oversized():
    with pytest.raises(BoneAgeError, match="does not fit"):
        Pad(10)(np.zeros((20, 5), np.uint8), {})


def test_squash_reproduces_nearest_resize():
    img = np.random.default_rng(2).integers(0, 255, (250, 180), dtype=np.uint8)
    assert np.array_equal(Squash(100)(img, {}),
                          cv2.resize(img, (100, 100), interpolation=cv2.INTER_NEAREST))
    same = np.zeros((100, 100), np.uint8)
    assert Squash(100)(same, {}) is same


def test_scale_to_unit_range():
    out = Scale()(np.array([[0, 255]], np.uint8), {})
    assert out.dtype == np.float32 and out.tolist() == [[0.0, 1.0]]


def test_pipeline_json_round_trip_replays_exactly():
    p = seed_pipeline(128, clip_limit=3.0)
    q = Pipeline.from_json(p.to_json())
    assert q == p and q.fingerprint() == p.fingerprint()
    film, _ = synthetic_film(height=500, width=400, seed=5)
    assert np.array_equal(p(film), q(film))
    assert [s["name"] for s in json.loads(p.to_json())["steps"]] == \
        ["to_uint8", "crop_hand", "fit", "clahe", "pad", "scale"]
    assert p.cached_part.steps[-1] == Pad(128)
    assert p.tensor_part.steps == (Scale(),)
    assert p.output_size == 128
    assert thumbnail_pipeline().output_size == 100


def test_pipeline_rejects_unknown_steps_and_params():
    with pytest.raises(BoneAgeError, match="unknown preprocessing step"):
        Pipeline.from_dict({"steps": [{"name": "sharpen"}]})
    with pytest.raises(BoneAgeError, match="unknown parameter"):
        Pipeline.from_dict({"steps": [{"name": "clahe", "strength": 2}]})
    with pytest.raises(BoneAgeError, match="invalid"):
        Pipeline.from_json("{not json")


@pytest.mark.parametrize("step, why", [
    ({"name": "crop_hand", "margin": "wide"}, "margin = 'wide' is not a number"),
    ({"name": "fit", "size": 0}, "size = 0 is not a positive whole number"),
    ({"name": "squash", "size": 100.5}, "size = 100.5 is not a positive whole number"),
    ({"name": "clahe", "tile_grid": True}, "tile_grid = True is not a positive whole number"),
    ({"name": "scale", "divisor": 0}, "divisor = 0 is not a number"),
    ({"name": "squash", "interpolation": "cubic-ish"}, "unknown interpolation"),
    ({"name": ["clahe"]}, "unknown preprocessing step"),
    ("clahe", "a pipeline step is"),
])
def test_pipeline_rejects_parameters_of_the_wrong_kind(step, why):
    """A hand-edited pipeline (or card) failed inside OpenCV at the first film."""
    with pytest.raises(BoneAgeError, match=why):
        Pipeline.from_dict({"steps": [step]})


def test_parameters_at_their_lower_bounds_are_accepted():
    p = Pipeline.from_dict({"steps": [{"name": "crop_hand", "margin": 0},
                                      {"name": "stretch", "low": 0, "high": 100},
                                      {"name": "scale", "divisor": 255}]})
    assert [s.name for s in p.steps] == ["crop_hand", "stretch", "scale"]


def test_16_bit_film_through_seed_pipeline():
    film, hand = synthetic_film(height=600, width=500, seed=1, bits=16)
    meta: dict = {}
    out = seed_pipeline(64)(film, meta)
    assert out.shape == (64, 64) and out.dtype == np.float32
    assert contains(meta["crop_box"], hand)


def test_hand_pipeline_frames_the_hand_alike_whatever_the_film_around_it():
    from boneage.preprocess.steps import hand_pipeline, preset_pipeline

    film, hand = synthetic_film(height=1100, width=850, seed=1, border=60)
    pipe = hand_pipeline(64)
    whole = pipe(film, {})
    x0, y0, x1, y1 = hand
    tight = pipe(film[max(0, y0 - 30):y1 + 30, max(0, x0 - 30):x1 + 30], {})
    grey = int(np.median(film[0]))
    loose = pipe(cv2.copyMakeBorder(film, 400, 400, 300, 300, cv2.BORDER_CONSTANT, value=grey),
                 {})
    squash = thumbnail_pipeline(64)
    # the same hand fills the square: framings differ far less than under the plain squash
    d_hand = np.abs(whole - tight).mean() + np.abs(whole - loose).mean()
    d_squash = np.abs(squash(film, {}) - squash(
        film[max(0, y0 - 30):y1 + 30, max(0, x0 - 30):x1 + 30], {})).mean()
    assert whole.shape == (64, 64) and d_hand / 2 < 0.5 * d_squash
    assert preset_pipeline("hand", 64) == pipe
    assert Pipeline.from_json(pipe.to_json()) == pipe
    with pytest.raises(BoneAgeError, match="unknown pipeline preset"):
        preset_pipeline("fancy", 64)


def test_stretch_fills_the_grey_range_and_is_a_preset_that_round_trips():
    from boneage.preprocess.steps import Stretch, preset_pipeline

    rng = np.random.default_rng(0)
    faint = rng.integers(60, 91, (80, 60)).astype(np.uint8)  # 30 grey levels
    out = Stretch()(faint, {})
    lo, hi = np.percentile(out, [1, 99])
    assert out.dtype == np.uint8 and lo <= 3 and hi >= 252
    # order kept: a darker pixel never becomes brighter than a lighter one
    order = np.argsort(faint.ravel(), kind="stable")
    assert np.all(np.diff(out.ravel()[order].astype(int)) >= 0)
    # a film already at full contrast hardly moves; a blank one does not move
    full = np.tile(np.arange(256, dtype=np.uint8), (4, 1))
    assert np.abs(Stretch()(full, {}).astype(int) - full).max() <= 3
    blank = np.full((10, 10), 77, np.uint8)
    assert np.array_equal(Stretch()(blank, {}), blank)
    with pytest.raises(BoneAgeError, match="low < high"):
        Stretch(low=50, high=10)
    p = preset_pipeline("hand-stretch", 100)
    assert [s.name for s in p.steps] == ["to_uint8", "crop_hand", "stretch", "squash", "scale"]
    assert Pipeline.from_json(p.to_json()) == p
    film, _ = synthetic_film(height=400, width=300, seed=3)
    assert p(film).shape == (100, 100)
