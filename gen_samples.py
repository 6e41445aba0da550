"""Export images, videos, interpolations, depth and meshes from a trained generator."""

import click


@click.group()
def main():
    """Export samples from a PGRF snapshot."""


if __name__ == '__main__':
    main()
