import pytest

from lightship.errors import UserError
from lightship.recipe import PRESETS, build_recipe


def test_presets_differ_in_the_tricks():
    base, tricks = build_recipe("baseline"), build_recipe("tricks")
    assert base.schedule.name == "multistep" and tricks.schedule.name == "cosine"
    assert not base.model.zero_gamma and tricks.model.zero_gamma
    assert not base.optim.no_bias_decay and tricks.optim.no_bias_decay
    assert not base.optim.lr_scaling and tricks.optim.lr_scaling
    assert base.train.label_smoothing == 0 and tricks.train.label_smoothing == 0.1
    assert base.schedule.warmup_epochs == 0 and tricks.schedule.warmup_epochs > 0
    assert tricks.augment.mixup_alpha > 0
    assert build_recipe(None) == build_recipe("default") == build_recipe(PRESETS["default"])


@pytest.mark.parametrize("epochs, warm", [(120, 5.0), (20, 0.833333), (240, 10.0)])
def test_tricks_warmup_is_the_papers_share_of_any_length(epochs, warm, tmp_path):
    """Bag of Tricks warms up for 5 of its 120 epochs: the preset keeps 5/120 of train.epochs."""
    from lightship.recipe import load_saved_recipe

    r = build_recipe("tricks", [f"train.epochs={epochs}"])
    assert r.schedule.warmup_share == pytest.approx(5 / 120)
    assert r.schedule.warmup_epochs == pytest.approx(warm, abs=1e-6)
    (tmp_path / "recipe.yaml").write_text(r.to_yaml())  # a saved tricks recipe re-runs the same
    assert load_saved_recipe(tmp_path / "recipe.yaml") == r
    assert build_recipe("tricks").schedule.warmup_epochs == pytest.approx(5 * 20 / 120, abs=1e-6)


def test_a_saved_recipe_without_warmup_share_keeps_its_warmup_epochs(tmp_path):
    """Runs saved before issue 22 hold warmup_epochs 0.833 and no warmup_share."""
    from lightship.recipe import load_saved_recipe

    tree = build_recipe("tricks").to_dict()
    del tree["schedule"]["warmup_share"]
    tree["schedule"]["warmup_epochs"], tree["train"]["epochs"] = 0.833, 120
    import yaml

    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(tree))
    saved = load_saved_recipe(tmp_path / "recipe.yaml")
    assert (saved.schedule.warmup_share, saved.schedule.warmup_epochs) == (None, 0.833)


def test_an_explicit_warmup_epochs_wins_over_the_share():
    r = build_recipe("tricks", ["schedule.warmup_epochs=1", "train.epochs=120"])
    assert (r.schedule.warmup_epochs, r.schedule.warmup_share) == (1, None)
    assert build_recipe("tricks", ["schedule.warmup_epochs=0"]).schedule.warmup_epochs == 0


def test_fast_and_default_presets_hold_what_was_chosen_and_stay_device_agnostic():
    fast, default = build_recipe("fast"), build_recipe("default")
    assert fast.model.name == "fastcnn16-4" and default.model.name == "fastcnn24-4"
    for r in (fast, default):
        assert r.schedule.name == "linear" and r.schedule.warmup_epochs == 1
        assert r.train.label_smoothing == 0.1 and r.optim.nesterov and r.optim.no_bias_decay
        # nothing tuned for one device: precision, memory format and device resolve per device
        assert (r.train.precision, r.train.channels_last, r.train.device) == ("auto",) * 3
        assert not r.train.compile
    assert fast.train.tta and fast.train.eval_every == fast.train.epochs == 6
    assert default.train.eval_every == 1 and default.train.epochs == 16
    assert default.train.tta == "final" and default.augment.rotate == 10
    assert [default.train.tta_at(e) for e in (1, 15, 16)] == [False, False, True]
    assert [fast.train.tta_at(e) for e in (1, 6)] == [True, True]


def test_union_keys_get_one_line_naming_every_accepted_form():
    for key, bad, forms in (("train.tta", "last", "a valid boolean or 'final'"),
                            ("train.channels_last", "maybe", "a valid boolean or 'auto'")):
        with pytest.raises(UserError) as e:
            build_recipe("default", [f"{key}={bad}"])
        assert str(e.value) == (f"recipe key '{key}' = '{bad}': should be {forms}; fix it in "
                                f"the recipe or with --set {key}=...")
    for name in ("fast", "default"):  # a 1-epoch smoke run of either is all warmup, not an error
        assert build_recipe(name, ["train.epochs=1"]).schedule.warmup_epochs == 1


def test_overrides_keep_types():
    r = build_recipe("baseline", ["optim.lr=0.05", "train.epochs=3", "model.zero_gamma=true",
                                  "schedule.milestones=[1, 2]"])
    assert r.optim.lr == 0.05 and r.train.epochs == 3 and r.model.zero_gamma is True
    assert r.schedule.milestones == [1.0, 2.0]


def test_yaml_file_with_preset_base(tmp_path):
    f = tmp_path / "r.yaml"
    f.write_text("preset: tricks\ntrain:\n  epochs: 4\n")
    r = build_recipe(str(f))
    assert r.train.epochs == 4 and r.model.zero_gamma  # from the preset


def test_round_trip_yaml(tmp_path):
    r = build_recipe("tricks", ["train.epochs=7"])
    f = tmp_path / "saved.yaml"
    f.write_text(r.to_yaml())
    assert build_recipe(str(f)) == r


@pytest.mark.parametrize("override, words", [
    (["optim.lrr=0.1"], ["unknown recipe key 'optim.lrr'", "did you mean 'lr'"]),
    (["traning.epochs=3"], ["unknown recipe key 'traning'", "did you mean 'train'"]),
    (["optim.lr=-0.1"], ["optim.lr", "-0.1", "greater than 0"]),
    (["optim.lr=0"], ["optim.lr", "greater than 0"]),
    (["train.epochs=0"], ["train.epochs", "greater than or equal to 1"]),
    (["train.epochs=three"], ["train.epochs", "'three'", "integer"]),
    (["model.shortcut=D"], ["model.shortcut", "'A'", "'B'", "'C'"]),
    (["schedule.warmup_epochs=20", "train.epochs=5"], ["warmup_epochs", "exceed"]),
    (["optim.lr"], ["not key=value"]),
])
def test_bad_recipes_name_key_value_and_fix(override, words):
    with pytest.raises(UserError) as exc:
        build_recipe("default", override)
    msg = str(exc.value)
    assert "\n" not in msg
    for w in words:
        assert w in msg, msg


def test_unknown_preset_and_missing_file():
    with pytest.raises(UserError, match="did you mean 'tricks'"):
        build_recipe("trick")


def test_bad_yaml(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("train: [unclosed\n")
    with pytest.raises(UserError, match="not valid YAML"):
        build_recipe(str(f))


def test_saved_recipe_reads_keys_it_lacks_as_schema_defaults_not_the_default_preset(tmp_path):
    """A run saves its whole recipe; a key added to lightship later was off for that run, even
    where the `default` preset now switches it on (rotation, TTA)."""
    import yaml

    from lightship.recipe import load_saved_recipe

    default = build_recipe("default")
    path = tmp_path / "recipe.yaml"
    path.write_text(default.to_yaml())
    assert load_saved_recipe(path) == default  # a whole saved recipe reads back as it was
    old = yaml.safe_load(default.to_yaml())
    del old["augment"]["rotate"], old["train"]["tta"]  # a run from before these keys
    path.write_text(yaml.safe_dump(old))
    saved = load_saved_recipe(path)
    assert (saved.augment.rotate, saved.train.tta) == (0.0, False)
    assert (default.augment.rotate, default.train.tta) == (10.0, "final")


def _alias_bomb(levels: int, width: int = 9) -> str:
    """Billion laughs: each level a list of ``width`` aliases of the level below, so a few
    hundred bytes of YAML stand for width**levels values."""
    lines = [f"    - &l0 [{', '.join(['lol'] * width)}]"]
    lines += [f"    - &l{i} [{', '.join([f'*l{i - 1}'] * width)}]" for i in range(1, levels)]
    return "train:\n  seed:\n" + "\n".join(lines) + "\n"


def test_yaml_alias_bomb_is_refused_at_once(tmp_path):
    """Issue 24: a 1 KB recipe whose train.seed is a billion laughs (9**9 values) ran for 60 s
    and took 5.7 GB, writing the expanded value into the error. Run under a memory cap of
    2 GB over what the process holds once lightship is imported: one short line, exit 2."""
    import subprocess
    import sys

    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(_alias_bomb(9))
    assert len(bomb.read_bytes()) < 1024
    code = ("import os, resource, sys\n"
            "from lightship.cli import main, make_parser\n"
            "make_parser()  # torch and the rest imported before the cap\n"
            "vm = int(open('/proc/self/statm').read().split()[0]) * os.sysconf('SC_PAGE_SIZE')\n"
            "resource.setrlimit(resource.RLIMIT_AS, (vm + (2 << 30), resource.RLIM_INFINITY))\n"
            "sys.exit(main(sys.argv[1:]))\n")
    proc = subprocess.run([sys.executable, "-c", code, "train", "--recipe", str(bomb),
                           "--print-recipe"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.count("\n") == 1 and len(proc.stderr) < 300, proc.stderr[-2000:]
    assert "bomb.yaml" in proc.stderr and "aliases" in proc.stderr, proc.stderr


def test_an_alias_bomb_in_set_is_refused_too():
    with pytest.raises(UserError, match="aliases"):
        build_recipe("default", ["train.seed=[&a [1,1,1,1,1,1,1,1,1,1], "
                                 + ", ".join(["&b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a]"]
                                             + ["*b"] * 199) + "]"])


def test_echoed_values_are_cut_short():
    """The smaller bomb's line was 428 KB: a value is echoed in at most ~80 characters."""
    for bad in (list(range(5000)), "x" * 5000, {f"k{i}": i for i in range(500)}):
        with pytest.raises(UserError) as e:
            build_recipe("default", [("train.seed", bad)])
        msg = str(e.value)
        assert msg.startswith("recipe key 'train.seed' = ") and len(msg) < 250, msg
    with pytest.raises(UserError) as e:
        build_recipe({"preset": list(range(5000))})
    assert len(str(e.value)) < 250
