import math

import pytest
import torch

from torch_utils.ops import volume_render
from training import cameras, patches, rendering


def _ball_field(radius=0.3, sigma_in=50.0, colour=(0.5, -0.2, 0.1)):
    """A smooth analytic field: a soft ball of density around the origin with a position-dependent colour."""

    def field(points):
        r = points.norm(dim=-1, keepdim=True)
        sigma = sigma_in * torch.sigmoid((radius - r) * 40)
        rgb = torch.tanh(points * 3 + points.new_tensor(colour))
        return rgb, sigma

    return field


def _opts(**kw):
    base = dict(ray_start=0.5, ray_end=1.5, num_coarse=16, num_fine=16, background='white', jitter=False)
    base.update(kw)
    return rendering.RayMarchOptions(**base)


# ----------------------------------------------------------------------------
# Compositing known answers.


@pytest.mark.parametrize('sigma', [0.1, 1.0, 7.5])
def test_constant_density_total_weight(sigma):
    torch.manual_seed(0)
    deltas = torch.rand(4, 20, dtype=torch.float64) * 0.1  # uneven intervals
    L = deltas.sum(dim=-1)
    sigmas = torch.full_like(deltas, sigma)
    colors = torch.ones(4, 20, 3, dtype=torch.float64)
    t = torch.cumsum(deltas, -1)
    color, _, opacity, weights = volume_render.composite(colors, sigmas, deltas, t)
    expected = 1 - torch.exp(-sigma * L)
    assert torch.allclose(opacity, expected, atol=1e-12)
    assert torch.allclose(weights.sum(-1), expected, atol=1e-12)
    assert torch.allclose(color[..., 0], expected, atol=1e-12)


def test_infinite_last_interval_is_opaque_and_stable():
    sigmas = torch.tensor([[0.5, 0.5, 0.5, 0.5]])
    deltas = torch.tensor([[0.1, 0.1, 0.1, volume_render.INFINITE_DELTA]])
    t = torch.tensor([[1.0, 1.1, 1.2, 1.3]])
    _, _, opacity, weights = volume_render.composite(torch.zeros(1, 4, 3), sigmas, deltas, t)
    assert torch.allclose(opacity, torch.ones(1), atol=1e-6)
    assert torch.allclose(weights[0, -1], torch.tensor(math.exp(-0.15)), atol=1e-6)  # no cancellation
    _, _, opacity0, _ = volume_render.composite(torch.zeros(1, 4, 3), torch.zeros(1, 4), deltas, t)
    assert torch.isfinite(opacity0).all() and opacity0.item() == 0


def test_composite_gradcheck():
    torch.manual_seed(0)
    colors = torch.randn(2, 5, 3, dtype=torch.float64, requires_grad=True)
    sigmas = (torch.rand(2, 5, dtype=torch.float64) * 3).requires_grad_()
    deltas = (torch.rand(2, 5, dtype=torch.float64) * 0.3 + 0.05).requires_grad_()
    t = torch.cumsum(deltas.detach(), -1).requires_grad_()
    assert torch.autograd.gradcheck(volume_render.composite, (colors, sigmas, deltas, t))
    assert torch.autograd.gradgradcheck(
        lambda c, s: volume_render.composite(c, s, deltas, t)[:3], (colors, sigmas)
    )


def test_composite_matches_naive_loop():
    torch.manual_seed(1)
    colors, sigmas, deltas = torch.randn(3, 7, 3), torch.rand(3, 7) * 4, torch.rand(3, 7) * 0.2
    t = torch.cumsum(deltas, -1)
    color, depth_sum, opacity, _ = volume_render.composite(colors, sigmas, deltas, t)
    for n in range(3):
        T, c, d = 1.0, torch.zeros(3), 0.0
        for i in range(7):
            alpha = 1 - math.exp(-sigmas[n, i].item() * deltas[n, i].item())
            c += T * alpha * colors[n, i]
            d += T * alpha * t[n, i].item()
            T *= 1 - alpha
        assert torch.allclose(color[n], c, atol=1e-5) and abs(depth_sum[n].item() - d) < 1e-5
        assert abs(opacity[n].item() - (1 - T)) < 1e-5


def test_bad_impl_is_refused():
    with pytest.raises(ValueError, match='impl'):
        volume_render.composite(
            torch.zeros(1, 2, 3), torch.zeros(1, 2), torch.zeros(1, 2), torch.zeros(1, 2), 'x'
        )


# ----------------------------------------------------------------------------
# Sampling.


def test_stratified_depths_one_per_bin():
    t, edges = rendering.stratified_depths((2, 3), 8, 1.0, 2.0, jitter=True, like=torch.zeros(1))
    assert t.shape == (2, 3, 8)
    assert ((t >= edges[:-1]) & (t <= edges[1:])).all()
    t_det, _ = rendering.stratified_depths((1, 1), 4, 1.0, 2.0, jitter=False, like=torch.zeros(1))
    assert torch.allclose(t_det[0, 0], torch.tensor([1.125, 1.375, 1.625, 1.875]))


@pytest.mark.parametrize('jitter', [False, True])
def test_delta_weights_put_fine_samples_at_the_delta(jitter):
    edges = torch.linspace(1.0, 2.0, 49)
    weights = torch.zeros(5, 48)
    bins = torch.tensor([0, 7, 20, 33, 47])
    weights[torch.arange(5), bins] = 1
    # Without jitter the quantiles stay clear of the default eps mass; with jitter, make the delta exact.
    t = rendering.sample_pdf(edges, weights, 48, jitter=jitter, eps=0 if jitter else 1e-5)
    assert t.shape == (5, 48)
    lo, hi = edges[bins][:, None], edges[bins + 1][:, None]
    assert ((t >= lo - 1e-6) & (t <= hi + 1e-6)).all()
    assert (t[:, 1:] >= t[:, :-1]).all()  # sorted


def test_uniform_weights_give_uniform_quantiles():
    edges = torch.linspace(0.0, 1.0, 11)
    t = rendering.sample_pdf(edges, torch.ones(1, 10), 5, jitter=False, eps=0)
    assert torch.allclose(t[0], torch.tensor([0.1, 0.3, 0.5, 0.7, 0.9]), atol=1e-6)


def test_sample_pdf_gradcheck():
    torch.manual_seed(0)
    edges = torch.linspace(0.0, 1.0, 7, dtype=torch.float64).repeat(2, 1).requires_grad_()
    weights = (torch.rand(2, 6, dtype=torch.float64) + 0.2).requires_grad_()
    assert torch.autograd.gradcheck(
        lambda e, w: rendering.sample_pdf(e, w, 5, jitter=False), (edges, weights)
    )


def test_merge_samples_sorts_values_with_depths():
    t_a, t_b = torch.tensor([[1.0, 3.0]]), torch.tensor([[2.0, 0.5]])
    v_a, v_b = t_a[..., None] * 10, t_b[..., None] * 10
    t, v = rendering.merge_samples(t_a, v_a, t_b, v_b)
    assert torch.equal(t, torch.tensor([[0.5, 1.0, 2.0, 3.0]])) and torch.equal(v[..., 0], t * 10)


# ----------------------------------------------------------------------------
# Rays and whole renders.


@pytest.mark.parametrize('yaw,pitch,radius', [(0.0, math.pi / 2, 1.0), (0.7, 1.1, 2.7), (-2.0, 2.5, 3.5)])
def test_camera_looking_at_origin_puts_origin_at_image_centre(yaw, pitch, radius):
    camera = cameras.angles_to_camera(yaw, pitch, radius, fov_deg=12, dtype=torch.float64)
    r = 5  # odd: the centre pixel's centre is the image centre
    origins, dirs = rendering.patch_rays(camera, patches.full_image_patch_params(1, dtype=torch.float64), r)
    centre = r // 2 * r + r // 2
    o, d = origins[0, centre], dirs[0, centre]
    closest = o - (o @ d) * d  # the point of the ray nearest to the world origin
    assert closest.norm() < 1e-9 and (o @ d) < 0


def test_opaque_slab_renders_at_its_depth():
    depth, width = 1.23, 0.05

    def slab(points):
        z = points[..., 2:]
        sigma = torch.where((z > depth) & (z < depth + width), 1e4, 0.0)
        return torch.full_like(points, 0.25), sigma

    origins = torch.zeros(1, 3, 3)
    dirs = torch.tensor([[[0.0, 0.0, 1.0]] * 3])
    rgb, d, opacity = rendering.render_rays(slab, origins, dirs, _opts(num_coarse=32, num_fine=64))
    bin_width = 1.0 / 32
    assert torch.allclose(opacity, torch.ones_like(opacity), atol=1e-5)
    assert torch.allclose(rgb, torch.full_like(rgb, 0.25), atol=1e-4)
    assert ((d - depth).abs() < bin_width / 4).all(), d  # fine samples find the front face


def test_empty_space_shows_background_colour_and_last_interval_to_infinity():
    def empty(points):
        return torch.zeros_like(points), torch.zeros_like(points[..., :1])

    def fog(points):
        return torch.full_like(points, -0.5), torch.full_like(points[..., :1], 0.01)

    o, d = torch.zeros(1, 2, 3), torch.tensor([[[0.0, 0.0, 1.0], [0.0, 0.6, 0.8]]])
    for bg, value in [('white', 1.0), ('black', -1.0)]:
        rgb, _, opacity = rendering.render_rays(empty, o, d, _opts(background=bg))
        assert torch.allclose(rgb, torch.full_like(rgb, value)) and (opacity == 0).all()
    rgb, _, opacity = rendering.render_rays(fog, o, d, _opts(last_to_infinity=True))
    assert torch.allclose(opacity, torch.ones_like(opacity)) and torch.allclose(
        rgb, torch.full_like(rgb, -0.5)
    )
    # Without the infinite interval the samples cover [t_0, ray_end] exactly.
    opts = _opts(last_to_infinity=False)
    _, _, opacity = rendering.render_rays(fog, o, d, opts)
    t, _, deltas = rendering.march_foreground(fog, o, d, opts)
    assert torch.allclose(deltas.sum(-1), opts.ray_end - t[..., 0])
    assert torch.allclose(opacity, 1 - torch.exp(-0.01 * (opts.ray_end - t[..., 0])), atol=1e-6)


def _render_image(field, camera, params, r, ray_chunk=None, jitter=False):
    origins, dirs = rendering.patch_rays(camera, params, r)
    out = rendering.render_rays_chunked(ray_chunk, origins, dirs, field=field, opts=_opts(jitter=jitter))
    return rendering.rays_to_image(*out, r)


def test_patch_renders_equal_full_render_at_patch_pixel_centres():
    camera = cameras.angles_to_camera([0.3, -0.4], [1.4, 1.7], 1.0, fov_deg=40)
    R, r = 16, 4
    full = _render_image(_ball_field(), camera, patches.full_image_patch_params(2), R)
    # (1, 0, 0) at r = R is the full image; an aligned patch is a crop of it.
    params = torch.tensor([[r / R, 4 / R, 8 / R], [r / R, 12 / R, 0.0]])
    patch = _render_image(_ball_field(), camera, params, r)
    assert torch.allclose(patch.image[0], full.image[0, :, 8:12, 4:8], atol=1e-5)
    assert torch.allclose(patch.depth[1], full.depth[1, :, 0:4, 12:16], atol=1e-5)
    # A non-aligned patch equals the full field rendered at the patch's own pixel centres.
    params = torch.tensor([[0.37, 0.11, 0.5], [0.8, 0.05, 0.13]])
    patch = _render_image(_ball_field(), camera, params, r)
    uv = patches.patch_pixel_centres(params, r).reshape(2, r * r, 2)
    o, d = cameras.pixels_to_rays(uv, camera)
    rgb, _, _ = rendering.render_rays(_ball_field(), o, d, _opts())
    assert torch.allclose(patch.image.permute(0, 2, 3, 1).reshape(2, r * r, 3), rgb, atol=1e-6)


def test_chunked_equals_unchunked():
    camera = cameras.angles_to_camera([0.2, 0.9], [1.5, 1.2], 1.0, fov_deg=40)
    params = patches.full_image_patch_params(2)
    whole = _render_image(_ball_field(), camera, params, 8)
    chunked = _render_image(_ball_field(), camera, params, 8, ray_chunk=14)  # 7 rays per sample, uneven
    for a, b in zip(whole, chunked):
        assert torch.allclose(a, b, atol=1e-6)


def test_inverse_sphere_samples_lie_on_their_spheres():
    torch.manual_seed(0)
    origins = torch.randn(2, 5, 3) * 0.2
    dirs = torch.nn.functional.normalize(torch.randn(2, 5, 3), dim=-1)
    coords, t = rendering.inverse_sphere_samples(origins, dirs, 16, jitter=True, radius=1.5)
    points = origins[:, :, None] + t[..., None] * dirs[:, :, None]
    assert torch.allclose(points.norm(dim=-1), 1.5 / coords[..., 3], rtol=1e-4)
    assert torch.allclose(coords[..., :3].norm(dim=-1), torch.ones(2, 5, 16), atol=1e-5)
    assert (t[..., 1:] > t[..., :-1]).all() and (coords[..., 3] > 0).all() and (coords[..., 3] <= 1).all()


def test_background_is_composited_behind_the_foreground():
    def empty(points):
        return torch.zeros_like(points), torch.zeros_like(points[..., :1])

    def half(points):  # an opaque half-space x > 0 in the foreground
        return torch.full_like(points, 0.3), torch.where(points[..., :1] > 0, 1e4, 0.0)

    def bg(coords):
        return torch.full_like(coords[..., :3], -0.7), torch.full_like(coords[..., :1], 5.0)

    o = torch.zeros(1, 2, 3)
    d = torch.tensor([[[0.6, 0.0, 0.8], [-0.6, 0.0, 0.8]]])
    opts = _opts(last_to_infinity=False)
    rgb, _, opacity = rendering.render_rays(
        empty, o, d, opts, background_field=bg, num_bg_samples=8, bg_radius=2.0
    )
    assert torch.allclose(rgb, torch.full_like(rgb, -0.7), atol=1e-5) and torch.allclose(
        opacity, torch.ones(1, 2)
    )
    rgb, _, _ = rendering.render_rays(half, o, d, opts, background_field=bg, num_bg_samples=8, bg_radius=2.0)
    assert torch.allclose(rgb[0, 0], torch.full((3,), 0.3), atol=1e-4)
    assert torch.allclose(rgb[0, 1], torch.full((3,), -0.7), atol=1e-4)


def test_bad_options_have_clear_errors():
    with pytest.raises(ValueError, match='ray_start'):
        rendering.RayMarchOptions(ray_start=2.0, ray_end=1.0)
    with pytest.raises(ValueError, match='background'):
        rendering.RayMarchOptions(ray_start=1.0, ray_end=2.0, background='pink')
