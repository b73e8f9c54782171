from dataclasses import dataclass, field

import pytest

from common.config import ConfigError, config_to_dict, load_config, save_config


@dataclass
class Model:
    dim: int = 64
    image_size: tuple = (64, 64)
    dropout: float = 0.0
    path: str = ""


@dataclass
class Train:
    lr: float = 1e-3
    steps: int = 100
    amp: bool = False
    sources: dict = field(default_factory=lambda: {"indoor": 1.0})
    resume: str | None = None


@dataclass
class Config:
    model: Model = field(default_factory=Model)
    train: Train = field(default_factory=Train)
    seed: int = 0


def test_yaml_then_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  dim: 32\n  image_size: [48, 64]\ntrain:\n  lr: 1\n  sources: {a: 2.0}\n")
    cfg = load_config(Config, path, ["train.steps=7", "dropout=0.5", "seed=3", "resume=run/x", "amp=true"])
    assert cfg.model.dim == 32 and cfg.model.image_size == (48, 64) and cfg.model.dropout == 0.5
    assert cfg.train.lr == 1.0 and isinstance(cfg.train.lr, float)
    assert cfg.train.steps == 7 and cfg.train.sources == {"a": 2.0} and cfg.train.resume == "run/x"
    assert cfg.train.amp is True and cfg.seed == 3
    assert load_config(Config).model.dim == 64  # defaults untouched by the run above


def test_round_trip(tmp_path):
    cfg = load_config(Config, None, ["model.image_size=[32, 32]", "train.lr=0.5"])
    again = load_config(Config, save_config(cfg, tmp_path / "saved.yaml"))
    assert again == cfg
    assert config_to_dict(cfg)["model"]["image_size"] == [32, 32]


@pytest.mark.parametrize(
    "text, message",
    [
        ("model:\n  dimm: 3\n", "c.yaml: unknown key 'model.dimm'; did you mean 'model.dim'"),
        ("modle:\n  dim: 3\n", "unknown key 'modle'; did you mean 'model'"),
        ("model:\n  dim: three\n", "key 'model.dim' expects int, got 'three'"),
        ("train:\n  steps: true\n", "key 'train.steps' expects int"),
        ("model: [1, 2]\n", "model must be a mapping"),
        ("model: {dim: [\n", "not valid YAML"),
    ],
)
def test_bad_file_names_file_and_key(tmp_path, text, message):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("(", r"\(")):
        load_config(Config, path)


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.stpes=3", "unknown key 'train.stpes'; did you mean 'train.steps'"),
        ("lrr=3", "unknown key 'lrr'; did you mean"),
        ("steps", "expected key=value"),
        ("dim=abc", "key 'model.dim' expects int"),
    ],
)
def test_bad_override(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(Config, None, [override])


def test_ambiguous_short_key():
    @dataclass
    class A:
        lr: float = 0.1

    @dataclass
    class Two:
        a: A = field(default_factory=A)
        b: A = field(default_factory=A)

    with pytest.raises(ConfigError, match="ambiguous"):
        load_config(Two, None, ["lr=1"])
    assert load_config(Two, None, ["b.lr=1"]).b.lr == 1.0


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml: config file not found"):
        load_config(Config, tmp_path / "nope.yaml")


@pytest.mark.parametrize("where", ["file", "override", "short override"])
def test_thread_keys_moved_to_the_threads_flag(tmp_path, where):
    """A thread count in a user's config (`train.cpu_threads: 1`, `threads: 1`) is one line saying
    where the setting went, not "unknown key"."""
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  cpu_threads: 1\n")
    file, overrides = {"file": (path, []), "override": (None, ["train.cpu_threads=1"]),
                       "short override": (None, ["threads=2"])}[where]
    with pytest.raises(ConfigError, match="is no longer a config setting; use the --threads N flag") as err:
        load_config(Config, file, overrides)
    assert "\n" not in str(err.value)

    @dataclass
    class WithThreads:  # a config that still has the field keeps it
        threads: int = 0

    assert load_config(WithThreads, None, ["threads=2"]).threads == 2
