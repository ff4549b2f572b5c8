"""The tokenizer zoo (src/zoo) builds on the codec packages and nothing outside it imports it."""
import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
ZOO = SRC / "zoo"


def package_of(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])


def imported_modules(source: str, package: str):
    """``(line, module)`` of every import in ``source``, relative imports resolved against ``package``."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([node.module] if node.module else []))
            yield node.lineno, base
            for alias in node.names:   # ``from src import zoo``
                yield node.lineno, f"{base}.{alias.name}"


def is_zoo(module: str) -> bool:
    return module == "src.zoo" or module.startswith(("src.zoo.", "src.tokenizer_tools", "src.tokenizer_args"))


def test_the_import_scanner_sees_absolute_relative_and_from_imports():
    source = ("import src.zoo.tools\nfrom src import zoo\nfrom ..zoo.ar import sample\nfrom .vq import VQGAN\n"
              "def f():\n    import src.tokenizer_tools\n")
    found = [m for _, m in imported_modules(source, "src.models")]
    assert [m for m in found if is_zoo(m)] == ["src.zoo.tools", "src.zoo", "src.zoo.ar", "src.zoo.ar.sample",
                                                "src.tokenizer_tools"]
    assert "src.models.vq" in found and not is_zoo("src.models.vq")


def test_nothing_outside_the_zoo_imports_it():
    offenders = [f"{p.relative_to(ROOT)}:{line}: {module}"
                 for p in sorted(SRC.rglob("*.py")) if ZOO not in p.parents
                 for line, module in imported_modules(p.read_text(), package_of(p)) if is_zoo(module)]
    assert offenders == []


def test_the_old_top_level_zoo_modules_are_gone():
    assert not (SRC / "tokenizer_tools.py").exists() and not (SRC / "tokenizer_args.py").exists()
    assert not (SRC / "models" / "tokenizers").exists() and not (SRC / "models" / "ar").exists()


def codec_modules():
    """The dotted names of every module under src/ outside src/zoo (found on disk, nothing imported)."""
    names = []
    for p in sorted(SRC.rglob("*.py")):
        if ZOO in p.parents:
            continue
        parts = p.relative_to(ROOT).with_suffix("").parts
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def _fresh(code: str) -> dict:
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_importing_every_codec_module_loads_no_zoo_module():
    """Every module under src/ but src/zoo, imported in a fresh interpreter: no src.zoo module comes
    along, and the zoo's registry names stay unknown."""
    got = _fresh(
        f"import importlib, json, sys\nnames = {codec_modules()!r}\n"
        "for name in names:\n"
        "    importlib.import_module(name)\n"
        "from src.utils.registry import DATASETS, MODELS, TRAINERS\n"
        "print(json.dumps({'imported': len(names), 'zoo': sorted(m for m in sys.modules if m.startswith('src.zoo')),\n"
        "                  'registered': [n for n in ('VQKD', 'LlamaC2I', 'ARTrainer', 'TokenDataset')\n"
        "                                 if n in MODELS or n in TRAINERS or n in DATASETS]}))\n")
    assert got["imported"] > 50
    assert got["zoo"] == [] and got["registered"] == []


def test_the_zoo_package_and_its_args_import_without_torch():
    got = _fresh("import json, sys\nimport src.zoo, src.zoo.args\n"
                 "print(json.dumps({'torch': 'torch' in sys.modules}))\n")
    assert got == {"torch": False}


def test_register_fills_the_names_every_tokenizer_config_uses():
    """Configs keep their type names: after src.zoo.register() every model, trainer and dataset type
    under config/tokenizer/ is known."""
    import src.models  # noqa: F401
    import src.trainer  # noqa: F401
    import src.zoo
    from src.utils.config import load_config
    from src.utils.registry import DATASETS, MODELS, TRAINERS

    src.zoo.register()
    configs = sorted(p for p in (ROOT / "config" / "tokenizer").rglob("*.yaml") if "_base_" not in p.parts)
    assert len(configs) > 10
    for path in configs:
        cfg = load_config(path)
        assert cfg.trainer.type in TRAINERS, path
        assert cfg.model.type in MODELS, path
        for section in ("train_dataset", "eval_dataset"):
            data = (cfg.get("dataset") or {}).get(section)
            if data:
                assert data["type"] in DATASETS, (path, section)


def test_build_trainer_names_the_zoo_for_an_unknown_type():
    from src.trainer import build_trainer
    from src.utils.config import Config

    with pytest.raises(KeyError, match=r"unknown trainer type 'NoSuchTrainer'.*src\.zoo\.register\(\)"):
        build_trainer(Config({"trainer": {"type": "NoSuchTrainer"}}))


@pytest.mark.parametrize("config, zoo", [("config/quickstart/demo.yaml", False),
                                         ("config/tokenizer/vqkd/quickstart_vqkd.yaml", True)])
def test_train_script_registers_the_zoo_only_for_a_zoo_config(tmp_path, sample_dir, config, zoo):
    """scripts/train.py --dry_run (one step, no files): a tokenizer-zoo config trains, a codec config
    runs without loading a single src.zoo module."""
    argv = [config, "-d", "cpu", "--dry_run", "--opt", f"ckpt_dir={tmp_path}", "total_iter=1", "eval_step=null",
            f"dataset.train_dataset.root_dir={sample_dir}", "dataset.train_dataset.sample_photos=false"]
    got = _fresh(
        "import importlib.util, json, os, sys\n"
        "os.environ['WANDB_MODE'] = 'disabled'\n"
        "spec = importlib.util.spec_from_file_location('train_script', 'scripts/train.py')\n"
        "train = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(train)\n"
        f"rc = train.main({argv!r})\n"
        "print(json.dumps({'rc': rc, 'zoo': any(m.startswith('src.zoo') for m in sys.modules)}))\n")
    assert got == {"rc": 0, "zoo": zoo}
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]
