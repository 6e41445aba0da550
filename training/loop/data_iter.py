"""An endless, resumable stream of real images for one rank.

The order is a pure function of (seed, position): global position p reads item perm_e[p mod n] of the
epoch e = p // n permutation, and rank k of W reads positions start + k, start + k + W, ... Resuming at
`cur_nimg` (the global number of images consumed) therefore continues the exact same stream, on any
number of DataLoader workers.
"""

import torch

import dnnlib


class InfiniteSampler(torch.utils.data.Sampler):
    """Indices for rank `rank` of `num_replicas`, from global position `start` on, forever."""

    def __init__(
        self, dataset_size: int, rank: int = 0, num_replicas: int = 1, seed: int = 0, start: int = 0
    ):
        assert dataset_size > 0 and 0 <= rank < num_replicas
        self.size = int(dataset_size)
        self.rank, self.num_replicas, self.seed, self.start = rank, num_replicas, int(seed), int(start)

    def _permutation(self, epoch: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(self.seed * 1000003 + epoch)
        return torch.randperm(self.size, generator=gen)

    def __iter__(self):
        pos = self.start + self.rank
        epoch, perm = None, None
        while True:
            if pos // self.size != epoch:
                epoch = pos // self.size
                perm = self._permutation(epoch)
            yield int(perm[pos % self.size])
            pos += self.num_replicas


class ItemsWithClasses(torch.utils.data.Dataset):
    """(image, camera label, class index) items of a dataset of (image, label) items; class -1 when the
    dataset has no classes (no `get_class`)."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, idx: int):
        image, label = self.dataset[idx]
        get_class = getattr(self.dataset, 'get_class', None)
        return image, label, get_class(idx) if get_class is not None else -1


def _identity_batch(items):
    images = torch.stack([torch.as_tensor(img) for img, _, _ in items])
    labels = torch.stack([torch.as_tensor(lbl) for _, lbl, _ in items])
    classes = torch.as_tensor([k for _, _, k in items], dtype=torch.int64)
    return images, labels, classes


def make_real_stream(
    dataset, batch_gpu: int, rank: int, world_size: int, seed: int, start: int, workers: int, device
):
    """An iterator of (images uint8 [batch_gpu, C, R, R], labels [batch_gpu, 25], class indices [batch_gpu])
    batches for this rank."""
    sampler = InfiniteSampler(len(dataset), rank=rank, num_replicas=world_size, seed=seed, start=start)
    loader = torch.utils.data.DataLoader(
        ItemsWithClasses(dataset),
        sampler=sampler,
        batch_size=batch_gpu,
        num_workers=workers,
        pin_memory=torch.device(device).type == 'cuda',
        prefetch_factor=2 if workers > 0 else None,
        persistent_workers=workers > 0,
        collate_fn=_identity_batch,
        generator=torch.Generator().manual_seed(seed),  # keeps the global RNG untouched (exact resume)
    )
    return iter(loader)


def real_batch_to_device(batch, device) -> dnnlib.EasyDict:
    """uint8 images -> float in [-1, 1]; labels stay [N, 25] float32, class indices [N] int64 (-1: none)."""
    images, labels, classes = batch
    images = images.to(device, non_blocking=True).to(torch.float32) / 127.5 - 1
    labels = labels.to(device, dtype=torch.float32, non_blocking=True)
    return dnnlib.EasyDict(images=images, labels=labels, classes=classes.to(device))
