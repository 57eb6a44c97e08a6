"""Training config: TOML + --set into dataclasses; bad keys and types are named."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from training.config import (
    SECTIONS,
    CollabConfig,
    TrainConfig,
    apply_overrides,
    describe,
    field_docs,
    load_config,
)

REPO = Path(__file__).resolve().parent.parent


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "c.toml"
    p.write_text(text, encoding="utf-8")
    return p


def test_defaults_follow_the_seed() -> None:
    cfg = load_config(None)
    assert cfg.model.name == "mlp784"
    assert (cfg.optim.name, cfg.optim.lr, cfg.optim.momentum, cfg.optim.nesterov, cfg.optim.decay) == (
        "sgd",
        0.01,
        0.9,
        True,
        1e-6,
    )
    assert (cfg.train.epochs, cfg.train.batch_size, cfg.train.strategy) == (10, 128, "ddp")
    assert (cfg.fault.fail_rank, cfg.fault.fail_at_step) == (-1, -1)
    assert cfg.collab is None


def test_toml_sections_map_to_dataclasses(tmp_path: Path) -> None:
    cfg = load_config(
        write(
            tmp_path,
            '[model]\nname = "cnn"\n[optim]\nname = "adam"\nlr = 1\n[train]\nepochs = 3\nbf16 = true\n'
            '[launch]\nnum_processes = 4\n[run]\ndir = "x"\n',
        )
    )
    assert cfg.model.name == "cnn"
    assert cfg.optim.name == "adam" and cfg.optim.lr == 1.0 and isinstance(cfg.optim.lr, float)
    assert cfg.train.epochs == 3 and cfg.train.bf16 is True
    assert cfg.launch.num_processes == 4 and cfg.run.dir == "x"
    assert cfg.train.batch_size == 128  # untouched keys keep defaults


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("[trian]\nepochs = 3\n", "[trian]"),
        ("[train]\nepoch = 3\n", "train.epoch"),
        ('[train]\nepochs = "3"\n', "train.epochs"),
        ("[train]\nepochs = 3.5\n", "train.epochs"),
        ('[optim]\nnesterov = "yes"\n', "optim.nesterov"),
        ("[optim]\nlr = true\n", "optim.lr"),
        ("[model]\nname = 3\n", "model.name"),
        ('[collab]\npeers = "cnn"\n', "collab.peers"),
        ("train = 3\n", "[train]"),
    ],
)
def test_unknown_keys_and_wrong_types_name_the_key(tmp_path: Path, text: str, named: str) -> None:
    with pytest.raises(ValueError, match=named.replace("[", r"\[").replace("]", r"\]")):
        load_config(write(tmp_path, text))


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("train.strategy=zero", "train.strategy"),
        ("optim.name=rmsprop", "optim.name"),
        ("model.name=resnet", "model.name"),
        ("train.batch_size=127", "train.batch_size"),  # not a multiple of 2 processes
        ("train.epochs=0", "train.epochs"),
        ("launch.num_processes=0", "launch.num_processes"),
        ("fault.fail_rank=2", "fault.fail_rank"),
        ("fault.mode=explode", "fault.mode"),
        ("collab.mode=swarm", "collab.mode"),
        ("collab.fusion=median", "collab.fusion"),
        ("collab.peers=mlp,resnet", "collab.peers[1]"),
    ],
)
def test_validation_names_the_key(override: str, named: str) -> None:
    with pytest.raises(ValueError, match=named.replace("[", r"\[").replace("]", r"\]")):
        load_config(None, [override])


def test_set_overrides_convert_to_the_field_type() -> None:
    cfg = load_config(
        None,
        [
            "train.epochs=3",
            "optim.lr=1",  # int literal for a float field
            "optim.nesterov=false",
            "run.dir=runs/123",
            "model.name=cnn",
            "launch.timeout_s=30",
            "optim.betas=[0.5, 0.6]",
            "collab.peers=mlp,cnn",
            "train.epochs=4",  # later wins
        ],
    )
    assert cfg.train.epochs == 4
    assert cfg.optim.lr == 1.0 and isinstance(cfg.optim.lr, float)
    assert cfg.optim.nesterov is False
    assert cfg.run.dir == "runs/123"
    assert cfg.launch.timeout_s == 30
    assert cfg.optim.betas == [0.5, 0.6]
    assert cfg.collab is not None and cfg.collab.peers == ["mlp", "cnn"]
    assert cfg.collab.mode == "dml"  # a --set creates the optional section with defaults


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("train.epochs=three", "train.epochs"),
        ("train.epochz=3", "train.epochz"),
        ("trian.epochs=3", "trian"),
        ("epochs=3", "section.key=value"),
        ("train.epochs", "section.key=value"),
        ("optim.nesterov=1", "optim.nesterov"),
    ],
)
def test_bad_overrides_name_the_key(override: str, named: str) -> None:
    with pytest.raises(ValueError, match=named):
        apply_overrides(TrainConfig(), [override])


def test_collab_section_is_optional_and_parsed(tmp_path: Path) -> None:
    cfg = load_config(
        write(tmp_path, '[collab]\nmode = "fedavg"\npeers = ["mlp784", "cnn"]\nrounds = 5\nmu = 0.01\n')
    )
    assert cfg.collab == CollabConfig(mode="fedavg", peers=["mlp784", "cnn"], rounds=5, mu=0.01)
    assert "collab" in cfg.to_dict() and "collab" not in TrainConfig().to_dict()


def test_every_field_has_a_docstring() -> None:
    for name, cls in SECTIONS.items():
        docs = field_docs(cls)
        missing = [f.name for f in dataclasses.fields(cls) if not docs.get(f.name)]
        assert not missing, f"[{name}] fields without a docstring: {missing}"
    text = describe()
    assert "fail_at_step" in text and "one optimizer step of one model" in text


def test_describe_lists_only_the_keys_the_job_reads() -> None:
    train_text = describe(TrainConfig())
    assert "[collab]" not in train_text and "strategy = 'ddp'" in train_text
    collab_text = describe(TrainConfig(collab=CollabConfig()))
    assert "[collab]" in collab_text
    for key in ("strategy", "bf16", "val_split", "plots"):
        assert f"  {key} = " not in collab_text, key
    # Collaborative runs checkpoint per round (or epoch) and resume from there.
    for key in ("resume", "checkpoint", "checkpoint_every", "keep_checkpoints"):
        assert f"  {key} = " in collab_text, key


def test_collab_refuses_keys_it_does_not_read_on_any_side(tmp_path: Path) -> None:
    # validate() is what the ranks run too, so a rank started without the CLI refuses the same way.
    with pytest.raises(ValueError, match=r"^train.strategy='fsdp': collaborative training does not use"):
        load_config(write(tmp_path, '[collab]\nmode = "dml"\n'), ["train.strategy=fsdp"])
    # train.batch_size is the batch of one model: per peer here, so no multiple of the ranks is needed.
    cfg = load_config(write(tmp_path, '[collab]\nmode = "dml"\n'), ["train.batch_size=33"])
    assert cfg.train.batch_size == 33
    with pytest.raises(
        ValueError, match=r"train\.batch_size: batch 33 must be a multiple of launch\.num_processes=2"
    ):
        load_config(None, ["train.batch_size=33", "launch.num_processes=2"])


def test_shipped_configs_are_valid() -> None:
    files = sorted((REPO / "conf" / "train").glob("*.toml"))
    assert files
    for f in files:
        load_config(f)


def test_missing_file_and_bad_toml(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not found"):
        load_config(tmp_path / "nope.toml")
    with pytest.raises(ValueError, match="invalid TOML"):
        load_config(write(tmp_path, "[train\n"))


def test_cli_reports_bad_keys_as_one_line_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    from spark_jobs.train import main

    assert main(["--set", "train.epochz=3"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "train.epochz" in err[0]


def test_cli_refuses_missing_shards_before_spark(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from spark_jobs.train import main

    assert main(["--set", f"data.shards={tmp_path / 'none'}", "--set", f"run.dir={tmp_path / 'run'}"]) == 2
    assert "manifest" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
