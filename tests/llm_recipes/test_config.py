from dataclasses import dataclass, field

import pytest
from transformers import TrainingArguments

from llm_recipes.config import RecipeParser


@dataclass
class DataArgs:
    dataset_path: str = field(default="data", metadata={"help": "where the data is"})
    block_size: int = field(default=128, metadata={"help": "tokens per block"})
    shuffle: bool = field(default=True, metadata={"help": "shuffle"})
    sample_rate: float | None = field(default=None, metadata={"help": "optional rate"})


def parser():
    return RecipeParser((DataArgs, TrainingArguments))


def write(tmp_path, text, name="recipe.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def parse_error(capsys, args):
    with pytest.raises(SystemExit) as exc:
        parser().parse(args)
    assert exc.value.code == 2
    return capsys.readouterr().err


def test_yaml_only(tmp_path):
    cfg = write(tmp_path, "block_size: 256\nshuffle: false\nlearning_rate: 3.0e-4\noutput_dir: out\n")
    data, train = parser().parse(["--config", cfg])
    assert data.block_size == 256 and data.shuffle is False and data.dataset_path == "data"
    assert train.learning_rate == pytest.approx(3e-4) and train.output_dir == "out"


def test_yaml_scientific_notation_without_dot(tmp_path):
    # YAML 1.1 reads `3e-4` as a string; argparse must still turn it into a float.
    cfg = write(tmp_path, "learning_rate: 3e-4\n")
    _, train = parser().parse(["--config", cfg])
    assert train.learning_rate == pytest.approx(3e-4)


def test_cli_overrides_yaml(tmp_path):
    cfg = write(tmp_path, "block_size: 256\nlearning_rate: 1.0e-3\n")
    data, train = parser().parse(["--config", cfg, "--learning_rate", "3e-4", "--block_size", "64"])
    assert data.block_size == 64 and train.learning_rate == pytest.approx(3e-4)


def test_config_equals_form(tmp_path):
    cfg = write(tmp_path, "block_size: 32\n")
    data, _ = parser().parse([f"--config={cfg}"])
    assert data.block_size == 32


def test_unknown_yaml_key_names_key_and_file(tmp_path, capsys):
    cfg = write(tmp_path, "block_size: 256\nlearnin_rate: 1.0e-3\n")
    err = parse_error(capsys, ["--config", cfg])
    assert "learnin_rate" in err and cfg in err and "did you mean 'learning_rate'" in err


def test_unknown_cli_key(capsys):
    err = parse_error(capsys, ["--blok_size", "3"])
    assert "--blok_size" in err and "command line" in err


def test_cli_abbreviation_is_not_accepted(capsys):
    err = parse_error(capsys, ["--block", "3"])
    assert "--block" in err


@pytest.mark.parametrize(
    "text,key",
    [
        ("block_size: 2.5\n", "block_size"),
        ("block_size: many\n", "block_size"),
        ("block_size: true\n", "block_size"),
        ("learning_rate: fast\n", "learning_rate"),
        ("shuffle: maybe\n", "shuffle"),
        ("sample_rate: [1, 2]\n", "sample_rate"),
        ("lr_scheduler_type: cosine_typo\n", "lr_scheduler_type"),
    ],
)
def test_yaml_type_error_names_key_and_file(tmp_path, capsys, text, key):
    cfg = write(tmp_path, text)
    err = parse_error(capsys, ["--config", cfg])
    assert key in err and cfg in err


def test_cli_type_error(capsys):
    err = parse_error(capsys, ["--block_size", "big"])
    assert "block_size" in err and "invalid int value" in err


def test_missing_config_file(tmp_path, capsys):
    err = parse_error(capsys, ["--config", str(tmp_path / "nope.yaml")])
    assert "nope.yaml" in err and "not found" in err


def test_invalid_yaml_names_line(tmp_path, capsys):
    cfg = write(tmp_path, "block_size: 1\nshuffle: [true\n")
    err = parse_error(capsys, ["--config", cfg])
    assert cfg in err and "line" in err


def test_yaml_must_be_mapping(tmp_path, capsys):
    cfg = write(tmp_path, "- a\n- b\n")
    err = parse_error(capsys, ["--config", cfg])
    assert "mapping" in err


def test_none_from_cli_and_yaml(tmp_path):
    cfg = write(tmp_path, "sample_rate: 0.5\n")
    data, _ = parser().parse(["--config", cfg, "--sample_rate", "none"])
    assert data.sample_rate is None


@dataclass
class _Source:
    path: str
    language: str | None = None


@dataclass
class _WithSources:
    sets: list[_Source] = field(default_factory=list, metadata={"help": "sources"})


def test_source_lists_take_paths_or_json_objects_on_the_command_line(capsys):
    (args,) = RecipeParser(_WithSources).parse(["--sets", '{"path": "a", "language": "zh"}', "b"])
    assert args.sets == [_Source("a", "zh"), _Source("b")]
    with pytest.raises(SystemExit) as exc:
        RecipeParser(_WithSources).parse(["--sets", '{"path": "a", "lang": "zh"}'])
    assert exc.value.code == 2 and "unknown key(s) ['lang']" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        RecipeParser(_WithSources).parse(["--sets", '{"path": "a",'])
    assert "not a JSON object" in capsys.readouterr().err
