from dataclasses import dataclass, field

import pytest

from gausslift.config import apply_overrides, from_dict, load_config, save_config, to_dict
from gausslift.errors import InputError
from gausslift.ioutil import atomic_path, atomic_write_json


@dataclass
class Inner:
    lr: float = 1e-3
    steps: list = field(default_factory=lambda: [1, 2])


@dataclass
class Cfg:
    iters: int = 100
    name: str = "x"
    flag: bool = False
    inner: Inner = field(default_factory=Inner)


def test_yaml_round_trip(tmp_path):
    cfg = Cfg(iters=7, name="run", flag=True, inner=Inner(lr=0.5, steps=[3]))
    save_config(cfg, tmp_path / "c.yaml")
    back = load_config(Cfg, tmp_path / "c.yaml")
    assert back == cfg


def test_overrides_parse_types_and_nesting():
    cfg = apply_overrides(Cfg(), ["iters=42", "inner.lr=0.25", "flag=true", "inner.steps=[5, 6]"])
    assert (cfg.iters, cfg.inner.lr, cfg.flag, cfg.inner.steps) == (42, 0.25, True, [5, 6])
    assert Cfg().iters == 100  # defaults untouched


@pytest.mark.parametrize("bad", ["nokey=1", "inner.nokey=1", "iters", "iters=abc"])
def test_bad_overrides_are_clear_errors(bad):
    with pytest.raises(InputError):
        apply_overrides(Cfg(), [bad])


def test_unknown_key_in_file_names_the_file(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("iters: 3\nbogus: 1\n")
    with pytest.raises(InputError) as e:
        load_config(Cfg, p)
    assert "bogus" in str(e.value) and "c.yaml" in str(e.value)


def test_from_dict_rejects_non_integer_for_int():
    with pytest.raises(InputError):
        from_dict(Cfg, {"iters": 1.5})
    assert to_dict(from_dict(Cfg, {"iters": 2.0}))["iters"] == 2


def test_atomic_write_leaves_old_file_on_error(tmp_path):
    target = tmp_path / "out.json"
    atomic_write_json(target, {"a": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash mid-write")
    assert target.read_text().strip() == '{\n  "a": 1\n}'
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_atomic_output_gets_umask_permissions(tmp_path):
    import os

    old = os.umask(0o022)
    try:
        atomic_write_json(tmp_path / "p.json", {})
    finally:
        os.umask(old)
    assert (tmp_path / "p.json").stat().st_mode & 0o777 == 0o644
