"""Every relative path in a config file is relative to the file, whatever the current directory."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from plantcad_flows.config import load_config
from plantcad_flows.errors import ValidationError

LETTUCE_TASK = {
    "tasks": [
        {
            "name": "lettuce_tis",
            "family": "motif_recovery",
            "splits": ["test"],
            "dataset": {"repo": None},
            "seq_length": 8192,
            "mask_positions": [4094, 4095, 4096],
        }
    ]
}


def test_relative_paths_resolve_against_the_config(tmp_path, monkeypatch, small_models, synthetic_dir):
    project = tmp_path / "project"
    (project / "models").mkdir(parents=True)
    shutil.copytree(small_models["mlm"], project / "models" / "mlm")
    shutil.copytree(synthetic_dir / "tis_recovery", project / "data" / "tis_recovery")
    (project / "tasks.yaml").write_text(yaml.safe_dump(LETTUCE_TASK))
    config = project / "configs" / "eval.yaml"
    config.parent.mkdir()
    config.write_text(
        yaml.safe_dump(
            {
                "task_files": ["../tasks.yaml"],
                "models": [
                    {"path": "../models/mlm", "type": "mlm", "name": "local"},
                    {"path": "org/some-model", "type": "mlm", "name": "hub"},  # a hub id stays one
                ],
                "splits": [
                    {
                        "task": "tis_recovery",
                        "split": "test_maize",
                        "path": "../data/tis_recovery/test_maize.parquet",
                    },
                    {
                        "task": "lettuce_tis",
                        "split": "test",
                        "path": "../data/tis_recovery/test_tomato.parquet",
                    },
                ],
                "executor": {"prefix": "../evals"},
            }
        )
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cfg = load_config(Path("..") / "project" / "configs" / "eval.yaml")
    assert [m.path for m in cfg.models] == [str(project / "models" / "mlm"), "org/some-model"]
    assert [s.path for s in cfg.splits] == [
        str(project / "data" / "tis_recovery" / "test_maize.parquet"),
        str(project / "data" / "tis_recovery" / "test_tomato.parquet"),
    ]
    assert cfg.task_files == [str(project / "tasks.yaml")]
    assert cfg.executor.prefix == str(project / "evals")


def test_a_missing_split_names_the_absolute_path_tried(tmp_path, monkeypatch):
    from plantcad_flows.data.splits import validate_split

    config = tmp_path / "cfgdir" / "eval.yaml"
    config.parent.mkdir()
    config.write_text(
        yaml.safe_dump(
            {
                "models": [{"path": "org/m", "type": "mlm"}],
                "splits": [{"task": "tis_recovery", "split": "test_maize", "path": "data/missing.parquet"}],
                "variants": [{"name": "v", "vcf": "v.vcf", "fasta": "../g.fa"}],
            }
        )
    )
    monkeypatch.chdir(tmp_path)
    cfg = load_config(config)
    assert cfg.splits[1].variants.vcf == str(tmp_path / "cfgdir" / "v.vcf")
    assert cfg.splits[1].variants.fasta == str(tmp_path / "g.fa")
    with pytest.raises(ValidationError) as e:
        validate_split(cfg.splits[0], cfg.sampling)
    assert str(tmp_path / "cfgdir" / "data" / "missing.parquet") in str(e.value)
