"""Train a patch-wise 3D-aware GAN (the training issue fills in the options)."""

import click


@click.command()
@click.option('--outdir', help='Where to make the run directory.', metavar='DIR', required=True)
@click.option('--dry-run', is_flag=True, help='Print the resolved options and exit.')
def main(outdir, dry_run):
    """Train a tri-plane NeRF GAN on r x r patches of random scale."""
    raise click.ClickException('training is not available yet in this version of PGRF')


if __name__ == '__main__':
    main()
