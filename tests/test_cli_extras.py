"""A missing optional extra is one line naming the extra and its pip command, exit 1, no traceback."""

import subprocess
import sys
from pathlib import Path

import pytest

import gausslift
from gausslift.cli import EXTRAS

SAMPLE = Path(gausslift.__file__).parent / "data" / "facelift_head_128"

HIDE = """
import sys
for name in {hidden!r}:
    sys.modules[name] = None  # import raises ModuleNotFoundError, as when it is not installed
from gausslift.cli import main
sys.exit(main({argv!r}))
"""


def _run(hidden, argv):
    code = HIDE.format(hidden=list(hidden), argv=[str(a) for a in argv])
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)


def _one_line(res, extra):
    err = res.stderr.strip()
    assert res.returncode == 1, res.stderr[-2000:]
    assert "Traceback" not in res.stderr and err.count("\n") == 0, err
    assert f"optional extra '{extra}'" in err and f"pip install 'gausslift[{extra}]'" in err


@pytest.mark.parametrize("module", ["diffusers", "transformers"])
def test_diffusion_commands_without_the_extra(tmp_path, module):
    img = SAMPLE / "images" / sorted(p.name for p in (SAMPLE / "images").iterdir())[0]
    _one_line(_run([module], ["mvdiff", "generate", img, "--pipe", tmp_path, "--out", tmp_path / "o"]),
              "diffusion")  # fmt: skip
    if module == "diffusers":  # (the tiny model trains without transformers' CLIP)
        argv = ["mvdiff", "train", SAMPLE, "--out", tmp_path / "r", "--iters", "1"]
        _one_line(_run([module], argv), "diffusion")


def test_every_extra_module_maps_to_a_declared_extra():
    text = (Path(gausslift.__file__).parents[1] / "pyproject.toml").read_text()
    for module, extra in EXTRAS.items():
        assert f"\n{extra} = [" in text, extra  # the extra exists in pyproject.toml
        assert module in text.split(f"\n{extra} = [", 1)[1].split("]", 1)[0], (module, extra)


@pytest.mark.parametrize("module", sorted(EXTRAS))
def test_each_hidden_module_gives_the_one_line(tmp_path, module, monkeypatch, capsys):
    """Whatever command imports the module: the dispatcher turns its absence into the one line."""
    import argparse

    from gausslift import cli

    def needs(args):
        __import__(module)

    parser = argparse.ArgumentParser()
    parser.set_defaults(_run=needs, verb="x")
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    monkeypatch.setitem(sys.modules, module, None)
    assert cli.main([]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and f"gausslift[{EXTRAS[module]}]" in err


def test_other_missing_modules_still_raise(monkeypatch):
    import argparse

    from gausslift import cli

    parser = argparse.ArgumentParser()
    parser.set_defaults(_run=lambda a: __import__("no_such_module_xyz"), verb="x")
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    with pytest.raises(ModuleNotFoundError):  # a bug, not a missing extra: the traceback stays
        cli.main([])
