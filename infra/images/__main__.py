"""``python -m videopoet.infra.images VARIANT [--registry R] [--build]``: print the image reference
(content-hash tag) a target would name, or the ``docker build`` command that builds it."""

from __future__ import annotations

import argparse
import shlex
import sys

from videopoet.infra import images
from videopoet.schemas.errors import VideoPoetError


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m videopoet.infra.images", description=__doc__)
    p.add_argument("variant", choices=images.VARIANTS)
    p.add_argument("--registry", default=None, help=f"image registry (default ${images.REGISTRY_ENV})")
    p.add_argument("--build", action="store_true", help="print the docker build command instead")
    args = p.parse_args(argv)
    try:
        if args.build:
            print(shlex.join(images.build_argv(args.variant, args.registry)))
        else:
            print(images.image_ref(images.content_tag(args.variant), args.registry))
    except VideoPoetError as e:
        print(f"videopoet: error: {e}", file=sys.stderr)
        return e.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
