"""Renderings (preprocess/render.py), the `standardise` step and rendering augmentation
(issue #28): each rendering does what its name says on a drawn film, the hand's mask finds the
hand on a black or a white background, and training renders about the share it is told."""

from __future__ import annotations

import numpy as np
import pytest

from boneage.data.synthetic import synthetic_film
from boneage.preprocess import render
from boneage.preprocess.steps import Pipeline, Standardise, hand_mask, step_from_dict


@pytest.fixture(scope="module")
def film() -> np.ndarray:
    img, _ = synthetic_film(height=400, width=320, seed=3)
    return img


def test_every_rendering_keeps_a_grey_film(film):
    for name, f in render.RENDERINGS.items():
        out = f(film)
        assert out.ndim == 2 and out.dtype in (np.uint8, np.uint16), name
        assert out.size > 0.3 * film.size, name  # only "borders cut" and "upright" resize


def test_background_renderings_leave_the_hand_and_set_the_rest(film):
    mask = render.film_mask(film)
    assert 0.05 < mask.mean() < 0.95
    black, white = render.background(film, 0, mask), render.background(film, 255, mask)
    assert (black[~mask] == 0).all() and (white[~mask] == 255).all()
    assert (black[mask] == film[mask]).all() and (white[mask] == film[mask]).all()


def test_contrast_renderings_by_hand():
    ramp = np.tile(np.arange(50, 150, dtype=np.uint8), (40, 1))
    s = render.stretch(ramp, 0, 100)
    assert s.min() == 0 and s.max() == 255
    g = render.gamma(ramp, 2.0)
    assert g[0, 99] == round(255 * (149 / 255) ** 2)
    inv = render.inverted_windowed(ramp, 0, 100)  # the window spans the film: a plain stretch
    assert np.abs(inv.astype(int) - s.astype(int)).max() <= 1
    assert render.twelve_bit(ramp).max() > 255  # a 12-bit film
    sharp = render.sharpen(np.kron(np.eye(2, dtype=np.uint8) * 200, np.ones((20, 20), np.uint8)),
                           sigma=2)
    assert sharp.max() == 255  # the edges overshoot


def test_hand_mask_on_black_white_and_flat_films(film):
    m = hand_mask(film)
    white = np.where(m, film, 255).astype(np.uint8)
    black = np.where(m, film, 0).astype(np.uint8)
    for f in (white, black):
        m2 = hand_mask(f)
        assert (m2 & m).sum() / m.sum() > 0.9 and (m2 & ~m).sum() / m.sum() < 0.1
    assert hand_mask(np.full((50, 50), 90, np.uint8)).all()  # no contrast: all of it


def test_standardise_is_blind_to_grey_level_changes(film):
    step = Standardise()
    base = step(film, {})
    for changed in (render.gamma(film, 0.6), render.gamma(film, 1.5), render.stretch(film),
                    np.where(hand_mask(film), film, 0).astype(np.uint8)):
        out = step(changed, {})
        m = base > 0
        assert np.abs(out[m].astype(int) - base[m].astype(int)).mean() < 6
    meta: dict = {}
    step(film, meta)
    assert 0.05 < meta["hand_fraction"] < 0.95
    assert base[~hand_mask(film)].max() == 0 and base[hand_mask(film)].min() >= 40


def test_standardise_round_trips_and_checks_its_parameters():
    p = Pipeline((Standardise(30.0, 250.0),))
    assert Pipeline.from_json(p.to_json()) == p
    with pytest.raises(Exception, match="standardise: need 0 <= low < high <= 255"):
        step_from_dict({"name": "standardise", "low": 200.0, "high": 100.0})


def test_random_renderings_change_films_and_keep_their_shape(film):
    rng = np.random.default_rng(0)
    small = film[::4, ::4].copy()
    changed = 0
    for _ in range(40):
        out = render.random_rendering(small, rng)
        assert out.shape == small.shape and out.dtype == np.uint8
        changed += int(np.abs(out.astype(int) - small.astype(int)).mean() > 1)
    assert changed >= 30


def test_render_batch_renders_about_the_share_asked():
    torch = pytest.importorskip("torch")
    from boneage.training.augment import render_batch

    img, _ = synthetic_film(height=100, width=100, seed=1)
    x = torch.from_numpy(np.stack([img] * 200)).unsqueeze(1)
    rng = np.random.default_rng(1)
    y = render_batch(x, 0.5, rng)
    assert y.shape == x.shape and y.dtype == torch.uint8
    moved = (y.float() - x.float()).abs().mean(dim=(1, 2, 3)) > 0.5
    assert 70 <= int(moved.sum()) <= 120
    assert torch.equal(render_batch(x, 0.0, rng), x)


def test_a_hand_on_a_white_background_is_found_as_on_its_own_film(film):
    from boneage.preprocess.hand import localise_hand, white_background

    white = render.background(film, 255)
    assert white_background(white) and not white_background(film)
    a, b = localise_hand(film, 0.02), localise_hand(white, 0.02)
    assert max(abs(x - y) for x, y in zip(a.as_list(), b.as_list(), strict=True)) < 0.1 * max(
        film.shape)
    framed = np.pad(film, 30, constant_values=255)  # a white frame around a dark film
    assert not white_background(framed)


def _tilt(img: np.ndarray) -> float:
    """The mask's long axis from vertical in degrees (second central moments of the mask,
    OpenCV's image moments: not the eigenvectors `upright` uses)."""
    import cv2

    m = cv2.moments(render.film_mask(img).astype(np.uint8), binaryImage=True)
    theta = 0.5 * np.degrees(np.arctan2(2 * m["mu11"], m["mu20"] - m["mu02"]))  # from x
    return (theta - 90 + 90) % 180 - 90  # from the vertical, in -90..90


@pytest.mark.parametrize("angle", [-25, 18])
def test_the_upright_rendering_turns_a_tilted_film_upright(film, angle):
    """A film turned by a known angle (OpenCV, canvas grown to fit) and then through the
    "turned upright" rendering ends within 3 degrees of the film's own tilt: a rotation of
    the wrong sign would double the tilt instead."""
    import cv2

    h, w = film.shape
    rot = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
    side = int(np.hypot(h, w))
    rot[:, 2] += ((side - w) / 2, (side - h) / 2)
    tilted = cv2.warpAffine(film, rot, (side, side), borderValue=int(np.median(film[0])))
    assert abs(abs(_tilt(tilted) - _tilt(film)) - abs(angle)) < 3  # the tilt is what we made
    assert abs(_tilt(render.upright(tilted)) - _tilt(film)) < 3


def test_standardise_gives_each_grey_level_its_mid_rank():
    """Against ranks counted by hand: inside the mask a grey level g becomes
    low + (high - low) * (number below g + half the number equal to g) / number in the mask."""
    img = np.zeros((80, 80), np.uint8)
    img[10:70, 20:60] = 120  # the hand: three grey levels in known amounts
    img[10:30, 20:60] = 200
    img[30:35, 20:60] = 160
    step = Standardise(40.0, 240.0)
    out = step(img, {})
    mask = hand_mask(img)
    values = img[mask]
    n = values.size
    for g in np.unique(values):
        below, equal = int((values < g).sum()), int((values == g).sum())
        expected = round(40 + 200 * (below + 0.5 * equal) / n)
        got = np.unique(out[mask & (img == g)])
        assert got.tolist() == [expected], (g, got, expected)
    assert (out[~mask] == 0).all()
