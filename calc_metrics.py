"""Compute image and 3D metrics for a snapshot or a run directory."""

import click


@click.command()
@click.option('--network', help='Snapshot to evaluate.', metavar='PATH')
def main(network):
    """Evaluate FID/KID/PR and 3D metrics of a PGRF snapshot."""
    raise click.ClickException('metrics are not available yet in this version of PGRF')


if __name__ == '__main__':
    main()
