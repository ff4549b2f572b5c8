import textwrap

import pytest

from src.utils.config import Config, ConfigError, load_config, save_config


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def test_list_bases_applied_in_order_child_wins(tmp_path):
    write(tmp_path / "_base_/a.yaml", "x: 1\nopt: {lr: 1, betas: [0.9, 0.99]}\nonly_a: a\n")
    write(tmp_path / "_base_/b.yaml", "x: 2\nopt: {lr: 2}\n")
    child = write(tmp_path / "exp.yaml", "_base_: [./_base_/a.yaml, ./_base_/b.yaml]\nopt: {betas: [0.5]}\n")
    cfg = load_config(child)
    assert cfg.x == 2                      # later base wins
    assert cfg.opt.lr == 2
    assert cfg.opt.betas == [0.5]          # a list replaces a list
    assert cfg.only_a == "a"
    assert "_base_" not in cfg


def test_base_path_relative_to_including_file_and_recursive(tmp_path):
    write(tmp_path / "deep/base0.yaml", "a: {b: {c: 1, d: 2}}\n")
    write(tmp_path / "deep/base1.yaml", "_base_: base0.yaml\na: {b: {c: 10}}\n")
    child = write(tmp_path / "sub/exp.yaml", "_base_: ../deep/base1.yaml\na: {e: 3}\n")
    cfg = load_config(child)
    assert cfg.a.b.c == 10 and cfg.a.b.d == 2 and cfg.a.e == 3


def test_nested_delete_replaces_subtree(tmp_path):
    write(tmp_path / "base.yaml", "subnet: {enc: {type: A, ch: 1, extra: 5}, dec: {type: D}}\n")
    child = write(tmp_path / "exp.yaml", "_base_: base.yaml\nsubnet: {enc: {_delete_: true, type: B}}\n")
    cfg = load_config(child)
    assert cfg.subnet.enc == {"type": "B"}
    assert cfg.subnet.dec.type == "D"
    assert "_delete_" not in cfg.subnet.enc


def test_cycle_of_bases_is_reported(tmp_path):
    write(tmp_path / "a.yaml", "_base_: b.yaml\nx: 1\n")
    write(tmp_path / "b.yaml", "_base_: a.yaml\ny: 1\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_config(tmp_path / "a.yaml")


def test_missing_base_names_file(tmp_path):
    child = write(tmp_path / "exp.yaml", "_base_: nope.yaml\n")
    with pytest.raises(ConfigError, match=r"nope\.yaml.*exp\.yaml"):
        load_config(child)


@pytest.mark.parametrize("base,child", [("a: {b: 1}\n", "a: 3\n"), ("a: 3\n", "a: {b: 1}\n")])
def test_dict_non_dict_clash_suggests_delete(tmp_path, base, child):
    write(tmp_path / "base.yaml", base)
    path = write(tmp_path / "exp.yaml", "_base_: base.yaml\n" + child)
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert "_delete_" in str(e.value) and "exp.yaml" in str(e.value) and "'a'" in str(e.value)


def test_overrides_parse_yaml_and_need_existing_parent(tmp_path):
    path = write(tmp_path / "exp.yaml", "optim: {g: {lr: 0.1}}\nlist: [1]\n")
    cfg = load_config(path, ["optim.g.lr=1e-3", "+optim.g.new=[1, 2]", "list=[3, 4]", "+flag=true"])
    assert cfg.optim.g.lr == pytest.approx(1e-3)
    assert cfg.optim.g.new == [1, 2] and cfg.list == [3, 4] and cfg.flag is True
    with pytest.raises(ConfigError, match="optim.h"):
        load_config(path, ["optim.h.lr=1"])
    with pytest.raises(ConfigError, match="key.sub=value"):
        load_config(path, ["no_equals_sign"])


def test_an_override_of_a_key_no_base_defines_is_an_error(tmp_path):
    """``trainer.lerning_rate=1e-3`` (a typo) was once added silently and never read."""
    path = write(tmp_path / "exp.yaml", "trainer: {learning_rate: 0.1, type: T}\n")
    with pytest.raises(ConfigError, match=r"no key 'lerning_rate' in trainer; did you mean learning_rate\?"):
        load_config(path, ["trainer.lerning_rate=1e-3"])
    with pytest.raises(ConfigError, match=r"\+trainer\.lerning_rate"):   # says how to add it on purpose
        load_config(path, ["trainer.lerning_rate=1e-3"])
    assert load_config(path, ["+trainer.lerning_rate=1e-3"]).trainer.lerning_rate == pytest.approx(1e-3)


def test_attribute_access_and_round_trip(tmp_path):
    cfg = Config({"a": {"b": [{"c": 1}]}})
    assert cfg.a.b[0].c == 1
    with pytest.raises(AttributeError, match="keys"):
        _ = cfg.missing
    save_config(cfg, tmp_path / "out.yaml")
    assert load_config(tmp_path / "out.yaml") == cfg


def test_reference_style_base_with_top_level_delete(tmp_path):
    # The reference's model base file starts its subnet section with `_delete_: True`.
    write(tmp_path / "_base_/model.yaml", "subnet:\n  _delete_: True\n  encoder: {type: E}\n")
    write(tmp_path / "_base_/default.yaml", "subnet: {old: {type: O}}\n")
    path = write(tmp_path / "exp.yaml", "_base_: [./_base_/default.yaml, ./_base_/model.yaml]\n")
    cfg = load_config(path)
    assert list(cfg.subnet) == ["encoder"]
