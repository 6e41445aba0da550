"""A folder or zip of images (PNG/JPG) standing in for G's fakes: the image metrics of any sample set.

EG3D/EpiGRAF samples, or a user's own, are scored against a dataset with the very protocol and real-image
cache of snapshot evaluation (`calc_metrics.py --images DIR_OR_ZIP --data DATA`): the first N images in
name order are the N "fakes", RGBA composited onto the dataset's background as the real images are.
"""

import torch

from metrics import metric_utils as mu
from training.dataset import DatasetError, _Source, decode_image, parse_background

EXTENSIONS = ('.png', '.jpg', '.jpeg')


class ImageSet(torch.utils.data.Dataset):
    """uint8 [3, R, R] images of a folder or zip, in name order; all the same square size `resolution`."""

    def __init__(self, path: str, resolution: int, background='white'):
        self.path, self.background = path, parse_background(background)
        self._source = _Source(path)
        self.names = [n for n in self._source.image_names if n.lower().endswith(EXTENSIONS)]
        if not self.names:
            raise DatasetError(f'--images {path}: no PNG/JPG images found; give a folder or zip of samples')
        self._check_sizes(resolution)

    def _check_sizes(self, resolution: int) -> None:
        first = self.names[0]
        size = self._source.image_size(first)
        for name in self.names[1:]:
            if self._source.image_size(name) != size:
                w, h = self._source.image_size(name)
                raise DatasetError(
                    f'--images: {self._source.where(name)} is {w}x{h} but {first} is {size[0]}x{size[1]}; '
                    f'all samples must have one size'
                )
        if size != (resolution, resolution):
            raise DatasetError(
                f'--images: the samples are {size[0]}x{size[1]} but the dataset is {resolution}x{resolution}; '
                f'the protocol compares at the dataset resolution, so resize them to {resolution}x{resolution}'
            )

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, idx: int):
        name = self.names[idx]
        image = decode_image(self._source.read(name), self._source.where(name), self.background)
        return torch.from_numpy(image.transpose(2, 0, 1).copy())


def open_image_set(opts: mu.MetricOptions) -> ImageSet:
    resolution = int(mu.get_dataset(opts).resolution)
    return ImageSet(opts.fake_images, resolution, opts.dataset_kwargs.get('background', 'white'))


def compute_features(opts: mu.MetricOptions, num_items: int, capture_all=False, capture_mean_cov=False):
    """FeatureStats of the first `num_items` images of opts.fake_images (this rank's share, gathered)."""
    images = open_image_set(opts)
    if len(images) < num_items:
        hint = f'fid{len(images) // 1000}k_full' if len(images) >= 1000 else 'a set of at least 1000'
        raise ValueError(
            f'--images {opts.fake_images}: {len(images)} images, but the metric needs {num_items}; '
            f'give more samples or a smaller N ({hint})'
        )
    net = mu.get_feature_net(opts)
    items = mu.rank_items(num_items, opts)
    loader = torch.utils.data.DataLoader(
        torch.utils.data.Subset(images, items), batch_size=opts.batch_size, num_workers=opts.data_workers
    )
    stats = mu.FeatureStats(capture_all, capture_mean_cov, max_items=num_items)
    with mu.progress_bar(opts, num_items, 'image-set features') as bar:
        for batch in loader:
            with torch.no_grad():
                stats.append(mu.gather(net(batch.to(opts.device)), opts).cpu().numpy())
            bar.update(batch.shape[0] * opts.num_gpus)
    return stats
