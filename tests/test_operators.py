"""Operator algebra (A A⁺ A = A, adjointness, SVD views, tiles, parameters) for every operator."""

from __future__ import annotations

import json
import math
from collections.abc import Callable

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from diffrestore.errors import UserError
from diffrestore.operators import (
    BT601,
    TASKS,
    AvgPoolSR,
    BicubicSR,
    Blur,
    Colorize,
    ColorizeCompose,
    Compose,
    Denoise,
    Identity,
    Inpaint,
    Operator,
    RandomPixelsCS,
    SeparableTiles,
    TileBlur,
    WalshHadamardCS,
    anisotropic_gaussian,
    fwht,
    gaussian_kernel,
    load_operator,
    make_operator,
    random_mask,
    uniform_kernel,
    x_shape_from_y,
)
from diffrestore.operators.sr import bicubic_matrix

D64 = torch.float64


def _g(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _rand(shape, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=_g(seed), dtype=D64)


def _mask37(seed: int = 1, channels: int = 1, batch: int = 1) -> torch.Tensor:
    return torch.rand(batch, channels, 37, 41, generator=_g(seed)) > 0.4


_ANISO = anisotropic_gaussian(7, 1.2, 0.5, 0.6)
_GAUSS3 = gaussian_kernel(3, 0.7)

# name -> (builder, x shape (B, C, H, W), box alignment or None if restrict is unsupported, pinv is MP)
Case = tuple[Callable[[], Operator], tuple[int, int, int, int], int | None, bool]
CASES: dict[str, Case] = {
    "avgpool2": (lambda: AvgPoolSR(2), (2, 3, 2 * 9, 2 * 11), 2, True),
    "avgpool3": (lambda: AvgPoolSR(3), (2, 3, 3 * 9, 3 * 11), 3, True),
    "avgpool4": (lambda: AvgPoolSR(4), (2, 3, 4 * 9, 4 * 11), 4, True),
    "bicubic2": (lambda: BicubicSR(2), (2, 3, 2 * 9, 2 * 11), 2, True),
    "bicubic4": (lambda: BicubicSR(4), (2, 3, 4 * 9, 4 * 11), 4, True),
    "bicubic8": (lambda: BicubicSR(8), (2, 3, 8 * 9, 8 * 11), 8, True),
    "inpaint": (lambda: Inpaint(random_mask(37, 41, 0.5, seed=3)), (2, 3, 37, 41), 1, True),
    "inpaint_rgb_mask": (lambda: Inpaint(_mask37(4, channels=3)), (2, 3, 37, 41), 1, True),
    "inpaint_batch_mask": (lambda: Inpaint(_mask37(5, batch=2)), (2, 3, 37, 41), None, True),
    "colorize": (lambda: Colorize(), (2, 3, 37, 41), 1, True),
    "colorize_bt601": (lambda: Colorize(BT601), (2, 3, 37, 41), 1, True),
    "identity": (lambda: Identity(), (2, 3, 37, 41), 1, True),
    "denoise": (lambda: Denoise(), (2, 3, 37, 41), 1, True),
    "blur_gauss": (lambda: Blur(gaussian_kernel(5, 0.8), threshold=1e-6), (2, 3, 37, 41), 1, True),
    "blur_aniso": (lambda: Blur(_ANISO, threshold=1e-6), (2, 3, 37, 41), 1, True),
    "blur_even_box": (lambda: Blur(uniform_kernel(4), threshold=1e-6), (2, 3, 37, 41), 1, True),
    "cs_pixels": (lambda: RandomPixelsCS(0.3, seed=1, image_hw=(37, 41)), (2, 3, 37, 41), 1, True),
    "cs_hadamard": (lambda: WalshHadamardCS(0.3, seed=2, block=8), (2, 3, 8 * 3, 8 * 5), 8, True),
    "oldphoto_avgpool": (lambda: Compose([Colorize(), AvgPoolSR(4)]), (2, 3, 36, 44), 4, True),
    "oldphoto_bicubic": (lambda: Compose([Colorize(BT601), BicubicSR(2)]), (2, 3, 18, 22), 2, True),
    "color_inpaint": (lambda: Compose([Colorize(), Inpaint(_mask37(6))]), (2, 3, 37, 41), 1, True),
    "color_blur": (lambda: Compose([Colorize(), Blur(_GAUSS3, threshold=1e-6)]), (2, 3, 37, 41), 1, True),
}
NAMES = sorted(CASES)


def _case(name: str) -> tuple[Operator, tuple[int, int, int, int], int | None, bool]:
    build, shape, align, mp = CASES[name]
    return build(), shape, align, mp


def _close(a: torch.Tensor, b: torch.Tensor, tol: float = 1e-10) -> None:
    scale = max(1.0, float(b.abs().max()))
    err = float((a - b).abs().max())
    assert err <= tol * scale, f"max |diff| {err:.3e}"


def _boxes(H: int, W: int, a: int) -> list[tuple[int, int, int, int]]:
    """A 3×3 tile grid (aligned to a) with overlaps and edge-flush last tiles."""

    def axis(n: int) -> tuple[int, list[int]]:
        t = max(a, (n * 3 // 5) // a * a)
        pos = sorted({0, ((n - t) // 2) // a * a, n - t})
        return t, pos

    th, ph = axis(H)
    tw, pw = axis(W)
    return [(p, q, th, tw) for p in ph for q in pw]


def _tiles(x: torch.Tensor, boxes) -> torch.Tensor:
    return torch.stack([x[0, :, t : t + h, l : l + w] for t, l, h, w in boxes])


# ------------------------------------------------------------------------------------------ algebra


@pytest.mark.parametrize("name", NAMES)
def test_shapes_and_dtypes(name: str) -> None:
    op, shape, _, _ = _case(name)
    x = _rand(shape)
    y = op.A(x)
    assert tuple(y.shape) == op.y_shape(shape)
    assert op.x_shape_from_y(y.shape) == shape
    assert op.pinv(y).shape == x.shape and op.At(y).shape == x.shape
    y32 = op.A(x.float())
    assert y32.dtype == torch.float32
    assert op.pinv(y32).dtype == torch.float32
    _close(y32.double(), y, 1e-5)
    _close(op.pinv(y.float()).double(), op.pinv(y), 1e-4)


@pytest.mark.parametrize("name", NAMES)
def test_generalised_inverse(name: str) -> None:
    """A A⁺ A = A and A⁺ A A⁺ = A⁺ (float64, random vectors)."""
    op, shape, _, _ = _case(name)
    x = _rand(shape, 1)
    ax = op.A(x)
    _close(op.A(op.pinv(ax)), ax)
    y = _rand(ax.shape, 2)
    py = op.pinv(y)
    _close(op.pinv(op.A(py)), py)
    # the DDNM correction makes any x consistent with a consistent y
    _close(op.A(op.project(_rand(shape, 3), ax)), ax)


@pytest.mark.parametrize("name", NAMES)
def test_adjoint(name: str) -> None:
    op, shape, _, _ = _case(name)
    x = _rand(shape, 4)
    y = _rand(op.y_shape(shape), 5)
    lhs = float((op.A(x) * y).sum())
    rhs = float((x * op.At(y)).sum())
    assert abs(lhs - rhs) <= 1e-11 * max(1.0, abs(lhs))


@pytest.mark.parametrize("name", [n for n in NAMES if n != "inpaint_batch_mask"])
def test_batch_independent(name: str) -> None:
    op, shape, _, _ = _case(name)
    x = _rand(shape, 6)
    y = op.A(x)
    for b in range(shape[0]):
        _close(op.A(x[b : b + 1]), y[b : b + 1], 1e-12)
        _close(op.pinv(y[b : b + 1]), op.pinv(y)[b : b + 1], 1e-12)


def test_per_image_masks() -> None:
    m = _mask37(7, batch=2)
    op = Inpaint(m)
    x = _rand((2, 3, 37, 41))
    _close(op.A(x)[1:], Inpaint(m[1:]).A(x[1:]))
    assert op.singular_values().shape == (2, 1, 37, 41)
    with pytest.raises(ValueError):
        op.A(_rand((3, 3, 37, 41)))


@pytest.mark.parametrize("name", [n for n in NAMES if hasattr(CASES[n][0](), "Vt")])
def test_svd_view(name: str) -> None:
    """V orthonormal, A = U diag(s) Vᵀ, U Uᵀ = I on y, and A⁺ = V diag(s⁺) Uᵀ for Moore–Penrose ops."""
    op, shape, _, mp = _case(name)
    assert op.has_svd
    x = _rand(shape, 8)
    c = op.Vt(x)
    assert c.shape == x.shape
    _close(op.V(c), x)
    assert math.isclose(float(c.norm()), float(x.norm()), rel_tol=1e-12)
    r = _rand(shape, 9)
    _close(op.Vt(op.V(r)), r)
    s = op.singular_values(shape[1:])
    assert s.dtype == D64 and (s >= 0).all()
    sc = s * c
    assert sc.shape == x.shape
    ax = op.A(x)
    _close(op.U(sc), ax)
    y = _rand(ax.shape, 10)
    _close(op.U(op.Ut(y)), y)
    _close(op.Ut(ax), sc)
    if mp:
        sinv = torch.where(s > 1e-9, 1 / s.clamp_min(1e-300), torch.zeros_like(s))
        _close(op.V(sinv * op.Ut(y)), op.pinv(y))


@pytest.mark.parametrize("name", [n for n in NAMES if CASES[n][2] is not None])
def test_restrict_matches_whole_image(name: str) -> None:
    """Tile operator on tiles of x == tiles of the whole-image y; tile operators keep the algebra."""
    op, shape, align, _ = _case(name)
    op.bind(shape)
    H, W = shape[-2:]
    boxes = _boxes(H, W, align)
    x = _rand((1, *shape[1:]), 11)
    opr = op.restrict(boxes)
    xt = _tiles(x, boxes)
    yt = op.restrict_y(op.A(x), boxes)
    assert tuple(yt.shape) == tuple(opr.y_shape(xt.shape))
    _close(opr.A(xt), yt, 1e-11)
    # algebra of the tile operator (the tile blur's A⁺ is a regularised iterative solve: approximate)
    if isinstance(opr, TileBlur) or any(isinstance(o, TileBlur) for o in getattr(opr, "ops", [])):
        assert float((opr.A(opr.pinv(yt)) - yt).norm()) <= 0.012 * float(yt.norm())  # measured <= 0.0086
    else:
        _close(opr.A(opr.pinv(yt)), yt, 1e-9)
    z = _rand(yt.shape, 12)
    lhs, rhs = float((opr.A(xt) * z).sum()), float((xt * opr.At(z)).sum())
    assert abs(lhs - rhs) <= 1e-10 * max(1.0, abs(lhs))
    if hasattr(opr, "Vt"):
        s = opr.singular_values()
        _close(opr.U(s * opr.Vt(xt)), opr.A(xt), 1e-10)


def test_restrict_kinds() -> None:
    shape = (1, 3, 64, 64)
    boxes = [(0, 0, 32, 32), (16, 32, 32, 32), (32, 16, 32, 32)]
    assert isinstance(AvgPoolSR(4).restrict(boxes, shape), AvgPoolSR)
    assert isinstance(BicubicSR(4).restrict(boxes, shape), SeparableTiles)
    tb = Blur(gaussian_kernel(5, 1.0)).restrict(boxes, shape)
    assert isinstance(tb, TileBlur) and not tb.has_svd and not hasattr(tb, "Vt")
    assert isinstance(RandomPixelsCS(0.2, image_hw=(64, 64)).restrict(boxes), Inpaint)
    assert isinstance(Compose([Colorize(), BicubicSR(2)]).restrict(boxes, shape), ColorizeCompose)
    # tile operators know their size: singular_values() needs no argument even for an unbound parent
    assert AvgPoolSR(4).restrict(boxes, shape).singular_values().shape == (1, 32, 32)
    whole = Blur(gaussian_kernel(5, 1.0)).restrict([(0, 0, 64, 64)], shape)
    assert whole.singular_values().shape == (1, 64, 64)
    assert Compose([Colorize(), AvgPoolSR(4)]).restrict(boxes, shape).singular_values().shape == (3, 32, 32)
    # one tile covering the image: the exact blur with its SVD view
    assert isinstance(whole, Blur) and hasattr(whole, "Vt")
    with pytest.raises(UserError):
        AvgPoolSR(4).restrict([(2, 0, 32, 32)], shape)
    with pytest.raises(UserError):
        WalshHadamardCS(0.3, block=8).restrict([(0, 4, 16, 16)], shape)
    with pytest.raises(UserError):
        Blur(gaussian_kernel(9, 2.0)).restrict([(0, 0, 8, 8)], shape)
    with pytest.raises(ValueError):
        BicubicSR(2).restrict(boxes)  # unbound: needs the image size
    with pytest.raises(ValueError):
        AvgPoolSR(2).restrict([(0, 0, 32, 32), (0, 0, 16, 16)], shape)  # one size per stack
    with pytest.raises(UserError):
        Compose([AvgPoolSR(2), Inpaint(torch.ones(64, 64, dtype=torch.bool))]).restrict(boxes, shape)


def test_bicubic_tile_masks_rows_near_interior_edges() -> None:
    op = BicubicSR(2).bind((3, 40, 40))
    y = op.A(_rand((1, 3, 40, 40)))
    yt = op.restrict_y(y, [(0, 0, 20, 20), (20, 20, 20, 20)])
    # the top-left tile touches the image's top/left (reflection inside the tile): those rows are kept;
    # its bottom/right LR rows need pixels of the next tile: zeroed (2 rows at scale 2)
    assert (yt[0, :, :8, :8] != 0).all() and (yt[0, :, 8:] == 0).all() and (yt[0, :, :, 8:] == 0).all()
    assert (yt[1, :, :2] == 0).all() and (yt[1, :, 2:, 2:] != 0).all()


# ------------------------------------------------------------------------------------------ SR


def test_avgpool_is_block_mean_and_right_inverse() -> None:
    op = AvgPoolSR(3)
    x = _rand((2, 3, 9, 12))
    _close(op.A(x), F.avg_pool2d(x, 3))
    y = _rand((2, 3, 3, 4))
    _close(op.A(op.pinv(y)), y, 1e-14)
    _close(op.At(y), op.pinv(y) / 9)
    with pytest.raises(UserError, match="divisible by 3"):
        op.A(_rand((1, 3, 10, 12)))
    assert op.fit_shape((1, 3, 10, 14)) == (1, 3, 9, 12)


def test_bicubic_matches_matlab_kernel_in_the_interior() -> None:
    """Interior rows equal torch's antialiased bicubic (a = -0.5, same kernel); borders are symmetric."""
    for s in (2, 4, 8):
        L = 16 * s
        m = bicubic_matrix(L, s)
        eye = torch.eye(L, dtype=D64)[None, None]
        r = F.interpolate(eye, size=(L, L // s), mode="bicubic", antialias=True, align_corners=False)[0, 0]
        _close(r.T[3:-3], m[3:-3], 1e-12)
        _close(m.sum(1), torch.ones(L // s, dtype=D64), 1e-14)
        # symmetric padding: flipping the image flips the LR image
        _close(m.flip(0).flip(1), m, 1e-14)
    # s = 4, 16 taps per row: k[i] = cubic((i - 2s + 0.5)/s), DDNM's sr_bicubic kernel
    row = bicubic_matrix(64, 4)[5]
    nz = row[row != 0]
    assert nz.numel() == 16


def test_bicubic_scale_validation() -> None:
    with pytest.raises(UserError):
        BicubicSR(4).A(_rand((1, 3, 30, 32)))
    with pytest.raises(UserError):
        BicubicSR(1)


# ------------------------------------------------------------------------------------------ blur


def test_blur_is_centred_circular_convolution() -> None:
    k = torch.rand(3, 4, generator=_g(2), dtype=D64)
    op = Blur(k)
    k = op.kernel
    x = _rand((1, 2, 11, 13))
    ref = torch.zeros_like(x)
    for a in range(3):
        for b in range(4):
            ref += k[a, b] * torch.roll(x, shifts=(a - 1, b - 2), dims=(-2, -1))
    _close(op.A(x), ref, 1e-12)


def test_blur_threshold_bound_and_kernels() -> None:
    op = Blur(gaussian_kernel(9, 2.0))  # default tau = 3e-2 cuts high frequencies
    x = _rand((1, 3, 40, 40))
    err = (op.A(op.pinv(op.A(x))) - op.A(x)).norm()
    assert 0 < float(err) <= 3e-2 * float(x.norm())
    assert float(gaussian_kernel(None, 1.6).sum()) == pytest.approx(1.0)
    assert gaussian_kernel(None, 1.6).shape == (11, 11)
    k0, k90 = anisotropic_gaussian(9, 2.0, 0.7, 0.0), anisotropic_gaussian(9, 2.0, 0.7, math.pi / 2)
    _close(k0.T, k90, 1e-12)
    assert float(k0[4].sum()) > float(k0[:, 4].sum())  # elongated along x (columns) at theta = 0
    with pytest.raises(UserError):
        Blur(torch.zeros(3, 3))


def test_tile_blur_consistency_close_to_whole_image() -> None:
    """The tile A⁺ (regularised CG) makes tiles about as consistent as the whole-image thresholded A⁺,
    and a tile's result does not depend on the other tiles in its batch."""
    g = _g(3)
    x = F.avg_pool2d(torch.randn(1, 3, 96, 96, generator=g, dtype=D64), 5, 1, 2)
    x0 = F.avg_pool2d(torch.randn(1, 3, 96, 96, generator=g, dtype=D64), 5, 1, 2)
    op = Blur(gaussian_kernel(None, 1.6)).bind((3, 96, 96))
    y = op.A(x)
    whole = float((op.A(op.project(x0, y)) - y).norm() / y.norm())
    boxes = [(0, 0, 48, 48), (24, 32, 48, 48), (48, 48, 48, 48)]
    t = op.restrict(boxes)
    assert isinstance(t, TileBlur)
    yt, x0t = op.restrict_y(y, boxes), _tiles(x0, boxes)
    tile = float((t.A(t.project(x0t, yt)) - yt).norm() / yt.norm())
    assert tile <= 1.6 * whole  # measured 1.51x (seeded)
    _close(torch.cat([t.pinv(yt[i : i + 1]) for i in range(3)]), t.pinv(yt), 1e-12)


def test_kernel_file(tmp_path) -> None:
    from PIL import Image

    k = np.zeros((5, 5), np.uint8)
    k[2, :] = 255
    Image.fromarray(k).save(tmp_path / "k.png")
    op = make_operator("deblur", (3, 16, 16), kernel=str(tmp_path / "k.png"))
    _close(op.kernel[2], torch.full((5,), 0.2, dtype=D64))
    np.save(tmp_path / "k.npy", np.ones((3, 3)))
    op = make_operator("deblur", (3, 16, 16), kernel=str(tmp_path / "k.npy"))
    assert float(op.kernel.sum()) == pytest.approx(1.0)


# ------------------------------------------------------------------------------------------ colour, CS


def test_colorize_formulas() -> None:
    w = torch.tensor(BT601, dtype=D64)
    op = Colorize(BT601)
    g = _rand((1, 1, 5, 6))
    _close(op.pinv(g), (w / (w @ w))[None, :, None, None] * g)
    grey = g.expand(1, 3, 5, 6)
    _close(op.y_from_image(grey), g, 1e-15)  # weights sum to 1: a replicated grey image maps to itself
    _close(Colorize().pinv(g), grey, 1e-15)  # DDNM's (1/3,1/3,1/3): A⁺ g = (g, g, g)
    s = op.singular_values()
    assert float(s[0]) == pytest.approx(float(w.norm())) and float(s[1:].abs().sum()) == 0
    with pytest.raises(UserError):
        op.A(_rand((1, 4, 5, 6)))


def test_fwht_matches_hadamard_matrix() -> None:
    from scipy.linalg import hadamard

    for n in (1, 2, 8, 32):
        h = torch.from_numpy(hadamard(n).astype(np.float64)) / math.sqrt(n)
        x = _rand((3, n))
        _close(fwht(x), x @ h.T, 1e-13)
        _close(fwht(fwht(x)), x, 1e-13)
    with pytest.raises(ValueError):
        fwht(_rand((2, 6)))


def test_hadamard_cs_layout_and_rows() -> None:
    op = WalshHadamardCS(0.25, seed=3, block=4)
    assert op.m == 4 and int(op.kept[0]) == 0  # DC kept
    x = _rand((2, 3, 8, 12))
    y = op.A(x)
    assert y.shape == (2, 12, 2, 3)
    _close(op.A(op.At(y)), y, 1e-13)  # orthonormal rows: A Aᵀ = I
    # DC coefficient of block (0, 0), channel 1 = 4 * block mean (orthonormal 2-D WHT of a 4x4 block)
    assert float(y[0, 1 * 4 + 0, 0, 0]) == pytest.approx(4 * float(x[0, 1, :4, :4].mean()))
    with pytest.raises(UserError):
        op.A(_rand((1, 3, 10, 12)))
    with pytest.raises(UserError):
        WalshHadamardCS(0.25, block=6)


def test_pixel_cs() -> None:
    op = RandomPixelsCS(0.25, seed=4, image_hw=(10, 12))
    assert op.n_measurements == 30
    x = _rand((2, 3, 10, 12))
    y = op.A(x)
    assert y.shape == (2, 3, 30)
    _close(op.A(op.At(y)), y, 0)
    assert op.indices.equal(RandomPixelsCS(0.25, seed=4, image_hw=(10, 12)).indices)
    assert not op.indices.equal(RandomPixelsCS(0.25, seed=5, image_hw=(10, 12)).indices)
    with pytest.raises(UserError):
        RandomPixelsCS(0.0, image_hw=(10, 12))


# ------------------------------------------------------------------------------------------ compose


def test_compose_order_and_svd_choice() -> None:
    op = Compose([Colorize(), AvgPoolSR(2)])
    assert isinstance(op, ColorizeCompose)
    x = _rand((1, 3, 8, 8))
    _close(op.A(x), Colorize().A(AvgPoolSR(2).A(x)))
    _close(op.A(x), AvgPoolSR(2).A(Colorize().A(x)))  # the factors commute
    # A⁺ = A1⁺ A2⁺ is the Moore–Penrose inverse here: A⁺ A is an orthogonal projector (symmetric)
    z = _rand((1, 3, 8, 8), 1)
    assert float((op.pinv(op.A(x)) * z).sum()) == pytest.approx(float((x * op.pinv(op.A(z))).sum()))
    plain = Compose([AvgPoolSR(2), Inpaint(random_mask(8, 8, 0.5, seed=1))])
    assert not isinstance(plain, ColorizeCompose) and not hasattr(plain, "Vt")
    # non-commuting factors: A1⁺A2⁺ is only a heuristic (A A⁺ A != A)
    err = (plain.A(plain.pinv(plain.A(x))) - plain.A(x)).abs().max()
    assert float(err) > 1e-3


# ------------------------------------------------------------------------------------------ params


@pytest.mark.parametrize("name", NAMES)
def test_params_roundtrip(name: str, tmp_path) -> None:
    op, shape, _, _ = _case(name)
    op.bind(shape)
    json.dumps(op.params())
    path = op.save_params(tmp_path / "photo")
    assert path.name == "photo.operator.json"
    op2 = load_operator(tmp_path / "photo")
    assert type(op2) is type(op)
    assert op2.x_shape == op.x_shape
    x = _rand(shape, 13)
    _close(op2.A(x), op.A(x), 0)
    _close(op2.pinv(op.A(x)), op.pinv(op.A(x)), 1e-13)


def test_params_files(tmp_path) -> None:
    op = make_operator("inpaint", (3, 20, 30), kind="lines", seed=2)
    op.save_params(tmp_path)
    assert (tmp_path / "operator.json").is_file() and (tmp_path / "operator.mask.png").is_file()
    assert load_operator(tmp_path / "operator.json").mask.equal(op.mask)
    blur = make_operator("deblur", (3, 20, 30), kernel="aniso", sigma=2.0, theta=0.3)
    blur.save_params(tmp_path / "b")
    assert (tmp_path / "b.operator.kernel.npy").is_file()
    with pytest.raises(UserError):
        load_operator(tmp_path / "missing")


def test_to_device_dtype() -> None:
    op = Compose([Colorize(), Inpaint(_mask37(8))]).to("cpu", torch.float32)
    assert op.ops[0].weights.dtype == torch.float32 and op.ops[1].mask.dtype == torch.bool
    x = _rand((1, 3, 37, 41))
    _close(op.A(x.float()).double(), op.A(x), 1e-5)


# ------------------------------------------------------------------------------------------ factory


def test_factory_every_task() -> None:
    for task in TASKS:
        shape = (3, 64, 96)
        op = make_operator(task, shape)
        assert op.task == task, task
        assert op.x_shape == shape
        x = _rand((1, *shape))
        y = op.A(x)
        assert op.x_shape_from_y(y.shape) == (1, *shape)
        if task == "deblur":  # default threshold cuts frequencies: A A⁺ A = A up to tau·|x|
            assert float((op.A(op.pinv(y)) - y).norm()) <= 3e-2 * float(x.norm())
        else:
            _close(op.A(op.pinv(y)), y, 1e-6)


def test_factory_shapes_from_y() -> None:
    assert x_shape_from_y("sr", (3, 9, 11), scale=4) == (3, 36, 44)
    assert x_shape_from_y("oldphoto", (1, 3, 9, 11), scale=2) == (1, 3, 18, 22)  # grey file read as RGB
    assert x_shape_from_y("colorize", (1, 37, 41)) == (3, 37, 41)
    assert x_shape_from_y("cs", (2, 3 * 256, 2, 3), rate=0.25, block=32) == (2, 3, 64, 96)
    assert x_shape_from_y("deblur", (3, 37, 41)) == (3, 37, 41)
    with pytest.raises(UserError):
        x_shape_from_y("cs", (3, 100), kind="pixels")
    op = make_operator("sr", y_shape=(1, 3, 9, 11), scale=4, kernel="bicubic")
    assert isinstance(op, BicubicSR) and op.x_shape == (3, 36, 44)
    old = make_operator("oldphoto", y_shape=(1, 3, 9, 11), scale=2)
    assert old.y_from_image(torch.zeros(1, 3, 9, 11)).shape == (1, 1, 9, 11)


def test_factory_options() -> None:
    assert isinstance(make_operator("sr", scale=8), AvgPoolSR)
    assert make_operator("colorize", weights="bt601").weights.tolist() == pytest.approx(list(BT601))
    assert isinstance(make_operator("cs", (3, 37, 41), kind="pixels", rate=0.1), RandomPixelsCS)
    m = make_operator("inpaint", (3, 37, 41), kind="random", rate=0.7, seed=1).mask
    assert int((~m).sum()) == round(0.7 * 37 * 41)
    mask = torch.ones(37, 41, dtype=torch.bool)
    mask[5:9] = False
    assert make_operator("inpaint", mask=mask).mask.shape == (1, 1, 37, 41)
    assert make_operator("deblur", kernel="uniform", size=3).kernel.shape == (3, 3)
    # the CLI passes one namespace: None values and other tasks' options are ignored
    make_operator("denoise", (3, 8, 8), scale=None, rate=0.5)


def test_factory_errors() -> None:
    with pytest.raises(UserError, match="sr, inpaint, colorize, denoise, deblur, cs, oldphoto"):
        make_operator("superres")
    with pytest.raises(UserError, match="unknown operator option"):
        make_operator("sr", scael=4)
    with pytest.raises(UserError):
        make_operator("sr", scale=33)
    with pytest.raises(UserError):
        make_operator("sr", kernel="lanczos")
    with pytest.raises(UserError):
        make_operator("inpaint")  # no mask, no size
    with pytest.raises(UserError):
        make_operator("deblur", kernel="nonexistent-kernel")
    with pytest.raises(UserError, match="divisible by 4"):
        make_operator("sr", (3, 37, 41), scale=4).A(_rand((1, 3, 37, 41)))  # not divisible: clear message


def test_factory_binds_the_fitting_shape() -> None:
    """``degrade`` builds the operator from the raw ground truth, crops to ``fit_shape`` and re-binds."""
    op = make_operator("sr", (1, 3, 37, 41), scale=4)
    assert op.x_shape == (3, 36, 40) and op.fit_shape((1, 3, 37, 41)) == (1, 3, 36, 40)
    assert make_operator("oldphoto", (3, 37, 41), scale=2).x_shape == (3, 36, 40)
    assert make_operator("cs", (3, 70, 100), block=32).x_shape == (3, 64, 96)
    assert make_operator("inpaint", (3, 37, 41)).x_shape == (3, 37, 41)
