import subprocess
import sys

from gausslift.cli import VERBS, build_parser, main


def test_help_lists_available_verbs(capsys):
    parser = build_parser()
    help_text = parser.format_help()
    missing = [v for v in VERBS if f"\n    {v} " not in help_text and f"\n    {v}\n" not in help_text]
    assert len(VERBS) > 10 and not missing, missing  # every verb has its own line in the listing
    assert main([]) == 2


def test_module_entry_point_runs():
    out = subprocess.run([sys.executable, "-m", "gausslift", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("gausslift ")


def test_verbs_are_unique():
    assert len(VERBS) == len(set(VERBS))
