"""Class-conditional training: dataset.json "classes", G's class embedding, D's class projection, the loop's
class draws, and the CLIs' --cond / --class, end to end on the tiny dataset."""

import json
import os

import numpy as np
import PIL.Image
import pytest
import torch
from click.testing import CliRunner
from shared_doubles import TINY_G
from test_train_fixtures import add_classes, cli_args, make_tiny_dataset, make_tiny_setup

import calc_metrics
import dnnlib
import gen_samples
import train
from torch_utils import checkpoint
from training import cameras
from training.dataset import DatasetError, ImageFolderDataset
from training.loop import data_iter, run_dir, train_step, training_loop
from training.networks.discriminator import PatchDiscriminator
from training.networks.generator import Generator, one_hot_classes
from training.options import launch

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'fixtures')
TINY_D = dict(
    img_resolution=16, patch_resolution=8, channel_base=64, channel_max=8, hyper_dim=8, hyper_table_dim=4,
    hyper_num_freqs=2, cmap_dim=8, mbstd_group_size=2, precision='fp32',
)  # fmt: skip
CLASSES = [0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 0, 0]  # the 12 tiny images: class 0 is half of them


def _write_json(root, **data):
    with open(os.path.join(root, 'dataset.json')) as f:
        base = json.load(f)
    base.update(data)
    with open(os.path.join(root, 'dataset.json'), 'w') as f:
        json.dump(base, f)


@pytest.fixture
def data(tmp_path):
    return make_tiny_dataset(str(tmp_path / 'data'))


# ----------------------------------------------------------------------------
# dataset.json "classes".


def test_classes_as_pairs_with_names_and_mirrored_items_keep_their_class(data):
    add_classes(data, CLASSES, class_names=['cup', 'pear', 'shoe', 'unused'])
    ds = ImageFolderDataset(data, mirror=True)
    assert (ds.num_classes, ds.class_names) == (4, ['cup', 'pear', 'shoe', 'unused'])  # K = len(class_names)
    assert ds.classes.tolist() == CLASSES + CLASSES and ds.get_class(13) == 1
    assert ds.class_index('shoe') == 2 and ds.class_index(3) == 3
    with pytest.raises(DatasetError, match='no class'):
        ds.class_index('tree')


def test_classes_as_a_mapping_count_max_plus_one_and_one_class_can_be_kept(data):
    names = sorted(f for f in os.listdir(data) if f.endswith('.png'))
    _write_json(data, classes={name: 4 if i == 5 else 1 for i, name in enumerate(names)})
    ds = ImageFolderDataset(data)
    assert (ds.num_classes, ds.class_names) == (5, ['0', '1', '2', '3', '4'])
    assert ds.get_class(5) == 4 and ds.get_class(0) == 1
    only = ImageFolderDataset(data, only_class=4)
    assert (len(only), only.image_name(0), only.num_classes) == (1, names[5], 5)
    assert np.array_equal(only.get_label(0), ds.get_label(5))
    with pytest.raises(DatasetError, match='no images of class 2'):
        ImageFolderDataset(data, only_class=2)


def test_a_dataset_without_classes_has_none(data):
    ds = ImageFolderDataset(data)
    assert (ds.num_classes, ds.class_names) == (0, []) and set(ds.classes.tolist()) == {-1}


@pytest.mark.parametrize(
    'bad, message',
    [
        (dict(drop_last=True), r"no class for 1 image\(s\), e.g. 'img011.png'"),
        (dict(value=1.5), r"class of 'img003.png' is 1.5; class indices must be integers >= 0"),
        (dict(value='2'), r"class of 'img003.png' is '2'; class indices must be integers >= 0"),
        (dict(value=True), r"class of 'img003.png' is True; class indices must be integers >= 0"),
        (dict(value=-1), r"class of 'img003.png' is -1; class indices must be integers >= 0"),
        (
            dict(value=3, names=['a', 'b', 'c']),
            r"class of 'img003.png' is 3 but \"class_names\" names only 3",
        ),
    ],
)
def test_bad_classes_are_one_line_errors(data, bad, message):
    names = sorted(f for f in os.listdir(data) if f.endswith('.png'))
    pairs = [[n, 0] for n in (names[:-1] if bad.get('drop_last') else names)]
    if 'value' in bad:
        pairs[3][1] = bad['value']
    _write_json(data, classes=pairs, **({'class_names': bad['names']} if 'names' in bad else {}))
    with pytest.raises(DatasetError, match=message) as err:
        ImageFolderDataset(data)
    assert '\n' not in str(err.value) and 'dataset.json' in str(err.value)


# ----------------------------------------------------------------------------
# G and D.


def _camera(n):
    return cameras.angles_to_camera(torch.zeros(n), torch.full([n], 1.5), 1.0, 50.0)


def test_unconditional_G_loads_a_snapshot_of_the_code_before_classes():
    """tests/fixtures/unconditional_G.pt was saved by the code before class conditioning existed."""
    data = checkpoint.load(os.path.join(FIXTURES, 'unconditional_G.pt'))
    G = checkpoint.build_module(data['modules']['G_ema']).eval()
    ref = data['reference']
    assert G.c_dim == 0 and sorted(G.state_dict()) == ref['keys']
    with torch.no_grad():
        out = G(
            ref['z'], cameras.Camera(ref['cam2world'], ref['intrinsics']), noise_mode='const', resolution=8
        )
    # Same weights, same maths; faster kernels may sum in another order, so equal to fp32 round-off.
    torch.testing.assert_close(out.image, ref['image'], rtol=0, atol=1e-5)
    torch.manual_seed(0)
    fresh = Generator(**TINY_G)  # the same constructor today draws the same weights
    assert all(torch.equal(v, G.state_dict()[k]) for k, v in fresh.state_dict().items())


def test_classes_change_the_image_of_a_latent_and_train_the_embedding():
    torch.manual_seed(0)
    G = Generator(**TINY_G, c_dim=3).eval()
    z, cam = torch.randn(1, 8).expand(3, -1), _camera(3)
    c = one_hot_classes([0, 1, 2], 3)
    out = G(z, cam, noise_mode='const', resolution=8, c=c)
    images = out.image
    assert all((images[i] - images[j]).abs().max() > 1e-4 for i, j in [(0, 1), (0, 2), (1, 2)])
    images.square().mean().backward()
    assert G.mapping.embed.weight.grad.abs().max() > 0
    with pytest.raises(ValueError, match='c_dim=3 .* needs class labels c'):
        G(z, cam, noise_mode='const', resolution=8)
    same = G(z[:1], cam.select(slice(0, 1)), noise_mode='const', resolution=8, c=c[2:]).image
    assert torch.allclose(same, images[2:], atol=1e-6)


def test_mapping_follows_stylegan2s_recipe():
    """w = FC layers of [z / rms(z), e / rms(e)], e = the linear embedding of the one-hot class."""
    torch.manual_seed(0)
    G = Generator(**TINY_G, c_dim=3)
    z, c = torch.randn(2, 8), one_hot_classes([2, 0], 3)
    e = c @ (G.mapping.embed.weight * G.mapping.embed.weight_gain).T + G.mapping.embed.bias
    x = torch.cat(
        [z / z.square().mean(1, keepdim=True).sqrt(), e / e.square().mean(1, keepdim=True).sqrt()], 1
    )
    for layer in G.mapping.layers:
        x = layer(x)
    assert torch.allclose(G.mapping(z, c=c)[:, 0], x, atol=1e-5)


def test_D_projection_reads_the_class():
    torch.manual_seed(0)
    D = PatchDiscriminator(**TINY_D, c_dim=3).eval()
    img, params = torch.randn(2, 3, 8, 8), torch.tensor([[1.0, 0, 0], [0.5, 0.2, 0.1]])
    a, b = (D(img, params, c=one_hot_classes([k, k], 3)) for k in (0, 2))
    assert (a - b).abs().max() > 1e-5
    with pytest.raises(ValueError, match='needs class labels'):
        D(img, params)


# ----------------------------------------------------------------------------
# The loop.


def _state(tmp_path, classes=CLASSES, **flags):
    setup = make_tiny_setup(tmp_path, aug='noaug', kimg=1, cond=True)
    add_classes(setup['data'], classes)
    c = launch.resolve_training_options(
        outdir=setup['outdir'], cfg=setup['cfg'], data=setup['data'], gpus=1, resume=None, seed=0, desc=None,
        flags=flags,
    )  # fmt: skip
    launch._prepare_run_dir(c)
    return training_loop.setup(c, rank=0, world_size=1, device='cpu')


def test_reals_carry_their_class_and_fakes_follow_the_class_frequencies(tmp_path):
    s = _state(tmp_path)
    assert (s.G.c_dim, s.D.c_dim, s.G_ema.c_dim) == (3, 3, 3)
    assert s.grid_c.argmax(1).tolist() == [0, 1]  # the image grid: row i shows class i mod 3
    sampler = data_iter.InfiniteSampler(len(s.dataset), seed=s.c.seed)
    stream = iter(sampler)
    order = [next(stream) for _ in range(s.batch_gpu * s.num_rounds)]
    reals = train_step.prepare_reals(s, training_loop.next_real_batches(s))
    assert torch.cat([real.c for real in reals]).argmax(1).tolist() == [CLASSES[i] for i in order]
    counts = torch.zeros(3)
    for _ in range(100):
        counts += sum(fake.c.sum(0) for fake in train_step.gen_inputs(s))
    assert torch.allclose(counts / counts.sum(), torch.tensor([0.5, 0.25, 0.25]), atol=0.05)


def test_two_ranks_draw_the_classes_of_one_process(tmp_path):
    G = Generator(**TINY_G, c_dim=3)

    def draws(rank, world_size):
        s = dnnlib.EasyDict(
            input_stream=train_step.make_input_stream(0), rank=rank, world_size=world_size, device='cpu', G=G,
            dataset=dnnlib.EasyDict(classes=np.array(CLASSES)),
        )  # fmt: skip
        return train_step.draw_fake_classes(s, 4)

    one = draws(0, 1)
    assert torch.equal(torch.stack([draws(0, 2), draws(1, 2)], 1).reshape(4, 3), one)


def test_cond_needs_classes_at_dry_run(tmp_path):
    setup = make_tiny_setup(tmp_path, cond=True)
    result = CliRunner().invoke(train.main, cli_args(setup, '--dry-run'))
    assert result.exit_code != 0 and 'has no class labels; add "classes"' in result.output
    add_classes(setup['data'], CLASSES)
    result = CliRunner().invoke(train.main, cli_args(setup, '--dry-run'))
    assert result.exit_code == 0, result.output
    c = json.loads(result.output.split('Dry run')[0])
    assert (c['G_kwargs']['c_dim'], c['D_kwargs']['c_dim'], c['class_names']) == (3, 3, ['0', '1', '2'])
    result = CliRunner().invoke(train.main, cli_args(setup, '--dry-run', '--cond', 'false'))
    assert 'c_dim' not in json.loads(result.output.split('Dry run')[0])['G_kwargs']


def test_train_cond_then_gen_samples_and_calc_metrics(tmp_path, monkeypatch):
    monkeypatch.setenv('PGRF_CACHE_DIR', str(tmp_path / 'cache'))
    setup = make_tiny_setup(tmp_path, kimg=0.016, tick=0.016, snap=1)
    add_classes(setup['data'], CLASSES, class_names=['cup', 'pear', 'shoe'])
    result = CliRunner().invoke(train.main, cli_args(setup, '--cond', 'true'), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    [run] = run_dir.list_runs(setup['outdir'])
    [snapshot] = run_dir.list_snapshots(run)
    G = checkpoint.load_network(snapshot, 'G_ema')
    assert G.c_dim == 3 and G.mapping.embed.weight.shape == (8, 3)
    runner, out = CliRunner(), tmp_path / 'out'
    args = ['images', '--network', snapshot, '--seeds', '0-1', '--outdir', out, '--no-grid']
    res = [runner.invoke(gen_samples.main, [str(a) for a in args + extra]) for extra in (['--class', 1], [])]
    assert all(r.exit_code == 0 for r in res), [r.output for r in res]
    by_name = runner.invoke(
        gen_samples.main, [str(a) for a in args + ['--class', 'pear', '--outdir', tmp_path / 'o2']]
    )
    assert by_name.exit_code == 0, by_name.output

    # --class pear is --class 1; without --class seed 1 also gets class 1 (seed mod 3) but seed 0 class 0.
    def png(folder, seed):
        return np.asarray(PIL.Image.open(folder / f'images-seed{seed:04d}.png'))

    assert np.array_equal(png(out, 1), png(tmp_path / 'o2', 1))
    for command in (['video', '--frames', '2'], ['geometry', '--resolution', '8', '--no-render']):
        common = ['--network', snapshot, '--seeds', '0', '--outdir', tmp_path / command[0], '--class', 'shoe']
        res = runner.invoke(gen_samples.main, [str(a) for a in command + common])
        assert res.exit_code == 0, res.output
    bad = runner.invoke(gen_samples.main, [str(a) for a in args + ['--class', 3]])
    assert bad.exit_code != 0 and 'the network has 3 classes' in bad.output
    for extra in ([], ['--class', 'shoe']):
        result = runner.invoke(
            calc_metrics.main, ['--network', snapshot, '--metrics', 'swd1k', '--quiet', *extra]
        )
        assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in open(os.path.join(run, 'metric-swd1k.jsonl'))]
    assert len(rows) == 2 and rows[0]['results'] != rows[1]['results']


def test_class_on_an_unconditional_network_is_an_error(tmp_path):
    snapshot = os.path.join(FIXTURES, 'unconditional_G.pt')
    res = CliRunner().invoke(
        gen_samples.main, ['images', '--network', snapshot, '--class', '1', '--outdir', str(tmp_path)]
    )
    assert res.exit_code != 0 and 'this network is unconditional' in res.output


def test_the_loss_gives_D_the_reals_class_on_reals_and_R1_and_the_fakes_class_on_fakes(tmp_path):
    s = _state(tmp_path)
    [real], [fake] = (
        train_step.prepare_reals(s, training_loop.next_real_batches(s))[:1],
        train_step.gen_inputs(s)[:1],
    )
    real_c, gen_c = one_hot_classes([2, 2], 3), one_hot_classes([0, 1], 3)
    s.G.requires_grad_(True), s.D.requires_grad_(True)  # as run_phase does for the phase's module
    seen, forward = [], s.D.forward
    s.D.forward = lambda img, p, a=None, c=None, **kw: (
        seen.append(c.argmax(1).tolist()),
        forward(img, p, a, c),
    )[1]
    for phase, want in [('Gmain', [[0, 1]]), ('Dmain', [[0, 1], [2, 2]]), ('Dreg', [[2, 2]])]:
        seen.clear()
        s.loss.accumulate_gradients(
            phase, real.img, real.params, real.angles, fake.z, fake.camera, fake.params, gain=1, cur_nimg=0,
            real_c=real_c, gen_c=gen_c,
        )  # fmt: skip
        assert seen == want, phase
