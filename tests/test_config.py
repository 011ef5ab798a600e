import dataclasses
from typing import Literal

import pytest

from videopoet.schemas.config import (
    ConfigError,
    apply_overrides,
    config_fingerprint,
    dump_yaml,
    from_dict,
    load_config,
)


@dataclasses.dataclass(frozen=True)
class Inner:
    layers: int = 2
    act: Literal["gelu", "relu"] = "gelu"

    def validate(self):
        if self.layers < 1:
            raise ValueError("layers must be >= 1")


@dataclasses.dataclass(frozen=True)
class Outer:
    name: str = "x"
    lr: float = 1e-3
    dims: tuple[int, ...] = (1, 2)
    weights: dict[str, float] = dataclasses.field(default_factory=lambda: {"a": 1.0})
    model: Inner = Inner()
    note: str | None = None


PRESETS = {"tiny": lambda: Outer(name="tiny", model=Inner(layers=1)), "small": lambda: Outer(name="small")}


def test_preset_and_overrides():
    cfg = load_config(Outer, "tiny", ["model.layers=4", "lr=0.5", "dims=[3,4,5]", "note=hi"], PRESETS)
    assert cfg.model.layers == 4 and cfg.lr == 0.5 and cfg.dims == (3, 4, 5) and cfg.note == "hi"
    assert cfg.name == "tiny"


def test_int_coerces_to_float_but_not_reverse():
    assert load_config(Outer, "small", ["lr=1"], PRESETS).lr == 1.0
    # YAML 1.1 reads 3e-4 (no dot) as a string; a float field takes it as the number it spells
    assert load_config(Outer, "small", ["lr=3e-4"], PRESETS).lr == 3e-4
    assert load_config(Outer, "small", ["weights={b: 2E+1}"], PRESETS).weights == {"b": 20.0}
    with pytest.raises(ConfigError, match="lr: expected a number"):
        load_config(Outer, "small", ["lr=3e"], PRESETS)
    with pytest.raises(ConfigError, match="name: expected a string"):
        load_config(Outer, "small", ["name=1.5"], PRESETS)
    with pytest.raises(ConfigError, match="model.layers: expected an integer"):
        load_config(Outer, "small", ["model.layers=1.5"], PRESETS)


@pytest.mark.parametrize(
    "override,msg",
    [
        ("model.depth=3", "unknown config key model.depth"),
        ("nope=1", "unknown config key nope"),
        ("model.act=tanh", "not one of"),
        ("model.layers=0", "layers must be >= 1"),
        ("lr", "key=value"),
        ("dims=[1, x]", r"dims\[1\]: expected an integer"),
    ],
)
def test_bad_overrides_name_the_key(override, msg):
    with pytest.raises(ConfigError, match=msg):
        load_config(Outer, "small", [override], PRESETS)


def test_unknown_preset():
    with pytest.raises(ConfigError, match="unknown preset 'huge'"):
        load_config(Outer, "huge", [], PRESETS)


def test_yaml_roundtrip_and_preset_base(tmp_path):
    cfg = load_config(Outer, "tiny", ["model.act=relu"], PRESETS)
    p = tmp_path / "c.yaml"
    p.write_text(dump_yaml(cfg))
    assert load_config(Outer, str(p), [], PRESETS) == cfg
    p2 = tmp_path / "d.yaml"
    p2.write_text("preset: tiny\nmodel:\n  layers: 7\n")
    cfg2 = load_config(Outer, str(p2), [], PRESETS)
    assert cfg2.name == "tiny" and cfg2.model.layers == 7 and cfg2.model.act == "gelu"
    p3 = tmp_path / "e.yaml"
    p3.write_text("model:\n  bogus: 1\n")
    with pytest.raises(ConfigError, match="unknown config key model.bogus"):
        load_config(Outer, str(p3), [], PRESETS)


def test_yaml_is_safe_loaded(tmp_path):
    p = tmp_path / "evil.yaml"
    p.write_text("name: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(Outer, str(p), [], PRESETS)


def test_missing_yaml_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(Outer, str(tmp_path / "none.yaml"), [], PRESETS)


def test_fingerprint_tracks_content():
    a = from_dict(Outer, {"name": "a"})
    assert config_fingerprint(a) == config_fingerprint(from_dict(Outer, {"name": "a"}))
    assert config_fingerprint(a) != config_fingerprint(apply_overrides(a, ["lr=0.1"]))


def test_component_presets_load_and_validate():
    from videopoet.tokenizers.magvit2.config import PRESETS as MAGVIT2_PRESETS
    from videopoet.tokenizers.magvit2.config import MagvitConfig
    from videopoet.tokenizers.soundstream.config import PRESETS as SOUNDSTREAM_PRESETS
    from videopoet.tokenizers.soundstream.config import SoundStreamConfig

    for name in ("tiny", "small", "paper"):
        load_config(MagvitConfig, name, [], MAGVIT2_PRESETS)
        load_config(SoundStreamConfig, name, [], SOUNDSTREAM_PRESETS)
    assert load_config(MagvitConfig, "paper", [], MAGVIT2_PRESETS).codebook_size == 2**18
    with pytest.raises(ConfigError, match="frames must be 1 \\+ 4k"):
        load_config(MagvitConfig, "small", ["frames=16"], MAGVIT2_PRESETS)
    assert load_config(SoundStreamConfig, "paper", [], SOUNDSTREAM_PRESETS).frame_rate == 50.0


def test_data_config_as_measured_drops_condition_dropout_and_the_curriculum_only():
    from videopoet.trainer.config import DataConfig

    trained = DataConfig(cfg_dropout_text=0.2, cfg_dropout_inputs=0.1, curriculum=True, text_len=7)
    measured = trained.measured()
    assert (measured.cfg_dropout_text, measured.cfg_dropout_inputs, measured.curriculum) == (0.0, 0.0, False)
    assert measured.mixture == trained.mixture and measured.text_len == 7
    assert trained.cfg_dropout_text == 0.2 and trained.curriculum  # the run's own config is unchanged
    t2v = trained.measured(mixture={"t2v": 1.0})
    assert dict(t2v.mixture) == {"t2v": 1.0}
    t2v.validate()
    differing = {
        f.name for f in dataclasses.fields(DataConfig) if getattr(trained, f.name) != getattr(measured, f.name)
    }
    assert differing == {"cfg_dropout_text", "cfg_dropout_inputs", "curriculum"}
