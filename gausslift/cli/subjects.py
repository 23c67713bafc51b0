"""``gausslift subjects pack ict|mammal SRC [--out FILE] [--compare REF.npz]``: build a subject model
file (``ict_facekit.npz`` / ``mammal_mouse.npz``) from a checkout of the official repository, with
checks (``gausslift.subjects.pack``).

* ``ict``: ``git clone https://github.com/ICT-VGL/ICT-FaceKit`` (MIT).
* ``mammal``: ``git clone https://github.com/anl13/MAMMAL_mouse`` (no licence file: research use).

The default output is where the subject loaders look: ``$GAUSSLIFT_MESHES/<file>`` when that is
set, else ``~/.local/share/gausslift/meshes/<file>`` (``$XDG_DATA_HOME/gausslift/meshes``).
"""

from __future__ import annotations

import argparse

HELP = "subject model files: pack ict|mammal SRC builds one from the official repository's checkout"


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="subjects_cmd", metavar="pack", required=True)
    k = sub.add_parser("pack", help="build ict_facekit.npz or mammal_mouse.npz from a checkout, with checks",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    k.add_argument("kind", choices=("ict", "mammal"), help="ict (ICT-FaceKit) or mammal (MAMMAL_mouse)")
    k.add_argument("src", help="the checkout (its root, or FaceXModel/ or mouse_model/)")
    k.add_argument("--out", default=None,
                   help="output file or folder (default: $GAUSSLIFT_MESHES, else "
                        "~/.local/share/gausslift/meshes)")
    k.add_argument("--compare", default=None, metavar="REF_NPZ",
                   help="afterwards, compare the written file with this one key by key")


def run(args) -> int:
    from gausslift.errors import InputError
    from gausslift.subjects.pack import compare_npz, pack

    report = pack(args.kind, args.src, args.out)
    print("\n".join(report.lines()))
    if args.compare:
        try:
            diffs = compare_npz(report.path, args.compare)
        except (OSError, ValueError) as e:
            raise InputError(args.compare, f"cannot read as .npz ({type(e).__name__})") from None
        for key, what in diffs.items():
            print(f"  vs {args.compare}: {key} {what}")
    return 0
