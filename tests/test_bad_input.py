"""Bad input, each case through `plantcad-flows eval` as users run it: exit status 2, exactly one
line on stderr naming the field and the value, nothing on stdout (the run never reached the
Prefect server, so no flow run exists and no model loaded), and nothing under the prefix.

The CLI's `main` runs in this process (the console script only hands its return value to
`sys.exit`; `test_cli.py` runs the executable itself), with PREFECT_API_URL pointing at a port
where nothing listens: a case that slipped past the checks would try to start a flow run there,
print "using the Prefect server at ...", and fail with another status.

A split over the old 1 GiB limit is no longer bad input: `test_scale_reads.py` plans and samples
one.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import eval_config

from plantcad_flows.cli import main
from plantcad_flows.cluster.processes import free_port

TIS = ("tis_recovery", "test_maize")
CONS = ("conservation_within_andropogoneae", "test")
SV = ("structural_variant_effect_prediction", "test")


@pytest.fixture
def dead_api(monkeypatch):
    """A Prefect API URL nothing answers, and no other Prefect setting from the environment."""
    import os

    for k in [k for k in os.environ if k.startswith("PREFECT_")]:
        monkeypatch.delenv(k)
    monkeypatch.setenv("PREFECT_API_URL", f"http://127.0.0.1:{free_port()}/api")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def _base(small_models, synthetic_dir, prefix, tasks=(TIS,)) -> dict:
    cfg = eval_config(small_models, synthetic_dir, prefix, tasks=tasks)
    cfg["models"] = cfg["models"][:1]  # mlm
    return cfg


def _split_file(tmp_path: Path, synthetic_dir: Path, task_split, edit, name: str) -> str:
    frame = pd.read_parquet(synthetic_dir / task_split[0] / f"{task_split[1]}.parquet")
    frame = edit(frame.copy()) if edit else frame
    out = tmp_path / "data" / f"{name}.parquet"
    out.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(out, index=False)
    return str(out)


def _with_split(cfg: dict, task_split, path: str, **extra) -> dict:
    cfg["splits"] = [{"task": task_split[0], "split": task_split[1], "path": path, **extra}]
    return cfg


def _model_copy(tmp_path: Path, small_models, name: str) -> Path:
    dest = tmp_path / "models" / name
    shutil.copytree(small_models["mlm"], dest)
    return dest


def _two_mer_tokenizer(directory: Path) -> None:
    """A tokenizer that reads two bases per token (a k-mer model's), saved over the model's."""
    from itertools import product

    from tokenizers import Regex, Tokenizer, normalizers, pre_tokenizers
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab = special + list("acgtn") + ["".join(p) for p in product("acgtn", repeat=2)]
    core = Tokenizer(WordLevel(vocab={t: i for i, t in enumerate(vocab)}, unk_token="[UNK]"))
    core.normalizer = normalizers.Lowercase()
    core.pre_tokenizer = pre_tokenizers.Split(pattern=Regex(".{1,2}"), behavior="isolated")
    for f in directory.glob("tokenizer*"):
        f.unlink()
    PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="[PAD]", unk_token="[UNK]", mask_token="[MASK]"
    ).save_pretrained(directory)


def _set(path: str, value):
    """An edit that sets the dotted `path` (list indexes as integers) of the config to `value`."""

    def edit(cfg, **_):
        *parents, last = path.split(".")
        node = cfg
        for p in parents:
            node = node[int(p)] if isinstance(node, list) else node.setdefault(p, {})
        if isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value
        return cfg

    return edit


def _data(task_split, frame_edit, **extra):
    def edit(cfg, tmp_path, synthetic_dir, **_):
        path = _split_file(tmp_path, synthetic_dir, task_split, frame_edit, f"{task_split[0]}-bad")
        return _with_split(cfg, task_split, path, **extra)

    return edit


def _mixed_lengths(f):
    f["sequence"] = f["sequence"].astype(str)
    f.loc[3, "sequence"] = f.loc[3, "sequence"][:-2]
    return f


def _bad_chars(f):
    s = f["sequence"].astype(str)
    f["sequence"] = s
    f.loc[5, "sequence"] = s[5][:4000] + "X" + s[5][4001:]
    return f


def _bad_labels(f):
    f.loc[2, "label"] = 2
    return f


def _sv_outside(f):
    f.loc[1, "right"] = 9000
    return f


def _remote_code(cfg, tmp_path, small_models, **_):
    d = _model_copy(tmp_path, small_models, "custom-code")
    conf = yaml.safe_load((d / "config.json").read_text())  # JSON is YAML
    conf["auto_map"] = {"AutoModelForMaskedLM": "modeling_custom.CustomForMaskedLM"}
    (d / "config.json").write_text(__import__("json").dumps(conf))
    cfg["models"][0].update(path=str(d), name="custom")
    return cfg


def _no_tokenizer(cfg, tmp_path, small_models, **_):
    d = _model_copy(tmp_path, small_models, "no-tokenizer")
    for f in d.iterdir():
        if f.name.startswith(("tokenizer", "special_tokens", "vocab")):
            f.unlink()
    cfg["models"][0].update(path=str(d), name="bare")
    return cfg


def _no_weights(cfg, tmp_path, small_models, **_):
    d = _model_copy(tmp_path, small_models, "no-weights")
    (d / "model.safetensors").unlink()
    cfg["models"][0].update(path=str(d), name="bare")
    return cfg


def _truncated_weights(cfg, tmp_path, small_models, **_):
    d = _model_copy(tmp_path, small_models, "cut-short")
    weights = d / "model.safetensors"
    import os

    os.truncate(weights, weights.stat().st_size - 100)
    cfg["models"][0].update(path=str(d), name="cut")
    return cfg


def _kmer_tokenizer(cfg, tmp_path, small_models, **_):
    d = _model_copy(tmp_path, small_models, "two-mer")
    _two_mer_tokenizer(d)
    cfg["models"][0].update(path=str(d), name="kmer")
    return cfg


def _unwritable_prefix(cfg, tmp_path, **_):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    cfg["executor"]["prefix"] = str(blocker / "evals")
    return cfg


def _unreachable_s3(cfg, monkeypatch, **_):
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "2")  # botocore's own retries, so the case stays short
    cfg["executor"]["prefix"] = "s3://plantcad-evals/bad-input"
    return cfg


def _retry_waits(cfg, monkeypatch, **_):
    monkeypatch.setenv("PLANTCAD_TASK_RETRY_WAITS", "2,soon")
    return cfg


def _not_parquet(cfg, tmp_path, **_):
    out = tmp_path / "data" / "split.parquet"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("sequence,label\nACGT,0\n")  # a CSV under a parquet name
    return _with_split(cfg, CONS, str(out))


def _empty_split(f):
    return f.iloc[:0]


# (id, edit or raw YAML text, substrings the one line must hold: the field, the value, the problem)
CASES = [
    ("unknown-key", _set("gpus", 8), ["gpus=8: unknown key"]),
    ("unknown-nested-key", _set("compute.gpus", 8), ["compute.gpus=8: unknown key"]),
    ("unknown-model-key", _set("models.0.tokenizer", "x"), ["models[0].tokenizer='x': unknown key"]),
    ("type-batch-size", _set("compute.batch_size", "big"), ["compute.batch_size", "big"]),
    ("type-models", _set("models", "mlm"), ["models", "list"]),
    ("type-sampling-rate", _set("sampling.rate", "half"), ["sampling.rate", "half"]),
    ("type-ray-enabled", _set("ray.enabled", "maybe"), ["ray.enabled", "maybe"]),
    ("range-sampling-rate", _set("sampling.rate", 1.5), ["sampling.rate", "1.5"]),
    ("range-batch-size", _set("compute.batch_size", 0), ["compute.batch_size=0"]),
    ("task", _set("splits.0.task", "tis_recovry"), ["splits[].task='tis_recovry'", "did you mean"]),
    ("split-of-task", _set("splits.0.split", "test_rice"), ["splits[tis_recovery].split='test_rice'"]),
    ("model-type", _set("models.0.type", "rnn"), ["models[].type='rnn'", "valid: clm, mlm"]),
    (
        "mode-for-mlm",
        _set("models.0.motif_inference_mode", "rc_only"),
        ["models[].motif_inference_mode='rc_only'", "mlm"],
    ),
    (
        "mask-out-of-range",
        _set("splits.0.overrides", {"mask_token_indexes": [9000]}),
        ["mask_token_indexes=[9000]", "out of range"],
    ),
    (
        "mask-not-centred",
        _set("splits.0.overrides", {"mask_token_indexes": [10, 11, 12]}),
        ["mask_token_indexes=[10, 11, 12]", "not centred"],
    ),
    ("odd-context", _set("models.0.context_length", 513), ["context_length", "513", "even"]),
    ("crop-removes-masks", _set("models.0.context_length", 2), ["models[mlm].context_length=2", "crop"]),
    ("device", _set("compute.device", "tpu"), ["compute.device='tpu'"]),
    ("locks", _set("executor.locks", "zookeeper"), ["executor.locks", "zookeeper"]),
    ("duplicate-names", lambda cfg, **_: {**cfg, "models": cfg["models"] * 2}, ["models[].name='mlm'"]),
    ("yaml-syntax", "models: [\n  - path: x\n", ["invalid YAML", "line 2, column 3"]),
    ("trust-remote-code", _remote_code, ["models[custom].trust_remote_code=False", "auto_map"]),
    ("mixed-lengths", _data(TIS, _mixed_lengths), ["splits[tis_recovery/test_maize].sequence=8190", "mixed"]),
    ("non-acgtn", _data(TIS, _bad_chars), ["splits[tis_recovery/test_maize].sequence", "'X'"]),
    ("labels", _data(CONS, _bad_labels), ["label_column='label'", "found 2"]),
    (
        "sv-coordinates",
        _data(SV, _sv_outside),
        ["splits[structural_variant_effect_prediction/test].left/right"],
    ),
    ("empty-after-sampling", _set("sampling", {"rate": 0.01}), ["sampling=", "leaves 0 of 16"]),
    (
        "missing-column",
        _data(TIS, None, seq_column="seq"),
        ["splits[tis_recovery/test_maize].seq_column='seq'", "column missing"],
    ),
    (
        "split-path-missing",
        _set("splits.0.path", "/nonexistent/split.parquet"),
        ["/nonexistent/split.parquet"],
    ),
    (
        "not-parquet",
        _not_parquet,
        ["splits[conservation_within_andropogoneae/test].path=", "split.parquet", "not a parquet file"],
    ),
    (
        "empty-split",
        _data(CONS, _empty_split),
        ["splits[conservation_within_andropogoneae/test].path=", "empty split"],
    ),
    ("unwritable-prefix", _unwritable_prefix, ["executor.prefix=", "a-file/evals", "not writable"]),
    (
        "unreachable-s3",
        _unreachable_s3,
        [
            "executor.prefix='s3://plantcad-evals/bad-input'",
            "cannot be read",
            "Could not connect to the endpoint",
        ],
    ),
    (
        "no-tokenizer",
        _no_tokenizer,
        ["models[bare].path=", "no-tokenizer", "no tokenizer in the model directory"],
    ),
    ("kmer-tokenizer", _kmer_tokenizer, ["models[kmer].path=", "not one token per base"]),
    ("no-weights", _no_weights, ["models[bare].path=", "no weights in ", "no-weights (no model.safetensors"]),
    (
        "truncated-weights",
        _truncated_weights,
        ["models[cut].path=", "cut-short/model.safetensors is truncated: its tensors need"],
    ),
    ("cuda-on-cpu-host", _set("compute.device", "cuda"), ["compute.device='cuda'", "CUDA is not available"]),
    ("task-retry-waits", _retry_waits, ["PLANTCAD_TASK_RETRY_WAITS='2,soon'", "comma-separated seconds"]),
]


@pytest.mark.parametrize("case,edit,needles", CASES, ids=[c[0] for c in CASES])
def test_bad_input_exits_2_with_one_line(
    case, edit, needles, small_models, synthetic_dir, tmp_path, capsys, monkeypatch, dead_api
):
    if case == "cuda-on-cpu-host":
        import torch

        if torch.cuda.is_available():
            pytest.skip("this host has CUDA")
    prefix = tmp_path / "evals"
    cfg_path = tmp_path / "bad.yaml"
    if isinstance(edit, str):
        cfg_path.write_text(edit)
    else:
        cfg = _base(small_models, synthetic_dir, prefix)
        cfg = edit(
            cfg,
            tmp_path=tmp_path,
            synthetic_dir=synthetic_dir,
            small_models=small_models,
            monkeypatch=monkeypatch,
        )
        cfg_path.write_text(yaml.safe_dump(cfg))
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    code = main(["eval", str(cfg_path), "--results-json", str(tmp_path / "results.json")])
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert code == 2, (code, out, err)
    assert out == "", out  # never reached the Prefect server
    assert len(lines) == 1 and lines[0].startswith("config error"), err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    assert not prefix.exists() or not any(prefix.rglob("*")), sorted(prefix.rglob("*"))
    assert not (tmp_path / "results.json").exists()
    assert not (tmp_path / "outputs").exists()  # not even the server log of a run
    print(f"{case}: {lines[0]}")


@pytest.mark.parametrize(
    "variable,value",
    [("PLANTCAD_TASK_RETRY_WAITS", "2,soon"), ("PLANTCAD_API_LOST_AFTER", "-1")],
)
def test_sweep_demo_refuses_bad_environment_before_writing(variable, value, tmp_path, capsys, monkeypatch):
    """The demo's checkpoints and data are not written for a run that is refused."""
    monkeypatch.setenv(variable, value)
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    code = main(["sweep-demo", "--prefix", str(tmp_path / "sweep"), "--data-dir", str(tmp_path / "data")])
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert code == 2 and out == "", (code, out, err)
    assert len(lines) == 1 and f"{variable}={value!r}" in lines[0], err
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_at_least_25_cases_cover_the_issue_list():
    assert len(CASES) >= 25
