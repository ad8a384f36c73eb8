"""`lightship report`: the self-contained HTML page (checked as text and as pixels in headless
Chromium), TensorBoard scalars, and the bad-input messages."""

import base64
import os
import re
import shutil
import subprocess
import sys

import pytest
from conftest import tiny_recipe

from lightship.cli import _Parser
from lightship.errors import UserError
from lightship.report import write_report, write_scalars
from lightship.report.cli import add_report_parser
from lightship.train.loop import train


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A supervised run and a kd+hint run taught by it (different methods, same data)."""
    tmp = tmp_path_factory.mktemp("report")
    a = train(tiny_recipe(tmp, "train.epochs=6", "run.name=a"), quiet=True, progress=False)
    b = train(tiny_recipe(tmp, "train.epochs=6", "run.name=b", "method.name=kd+hint",
                          f"method.teacher.run={a.run_dir}"), quiet=True, progress=False)
    return a, b


def _report_cli(argv):
    parser = _Parser(prog="lightship")
    add_report_parser(parser.add_subparsers(dest="command", parser_class=_Parser))
    args = parser.parse_args(["report", *argv])
    return args.func(args)


def _images(page):
    return re.findall(r"<img[^>]*\ssrc='([^']*)'", page)


def test_report_has_verdicts_table_and_only_inline_images(runs, tmp_path):
    a, b = runs
    out = write_report([a.run_dir, b.run_dir], tmp_path / "report.html")
    page = out.read_text()
    for run, method in ((a, "supervised"), (b, "kd+hint")):
        assert run.summary["verdict"] in page  # the label the run itself recorded
        row = rf"<tr><td>{run.run_dir.name}</td><td>cnn4</td><td>{re.escape(method)}</td>"
        assert re.search(row, page)
    for column in ("best top-1", "last top-1", "final train loss", "floor", "train time",
                   "parameters"):
        assert f"<th>{column}" in page
    assert "panels: loss, ce, kd, hint." in page  # each named term has its own panel
    imgs = _images(page)
    assert len(imgs) == 3  # curves, loss terms, lr + grad norm
    for src in imgs:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert not re.search(r"(src|href)=['\"](?!data:)", page)  # no external assets


def test_reference_adds_floor_comparison(runs, tmp_path):
    a, b = runs
    out = tmp_path / "ref.html"
    assert _report_cli([str(b.run_dir), "-o", str(out), "--reference", str(a.run_dir)]) == 0
    page = out.read_text()
    assert "Floors: student vs reference" in page and "a (reference)" in page
    assert len(_images(page)) == 4


def test_single_run_defaults_to_its_folder(runs, capsys):
    a, _ = runs
    assert _report_cli([str(a.run_dir)]) == 0
    assert (a.run_dir / "report.html").exists()
    assert "wrote" in capsys.readouterr().out


def test_stopped_and_resumed_runs(tmp_path):
    recipe = tiny_recipe(tmp_path, "train.epochs=4", "run.name=r")
    run_dir = train(recipe, quiet=True, progress=False, stop_after_epochs=2).run_dir
    page = write_report([run_dir], tmp_path / "stopped.html").read_text()
    assert "stopped at 2/4" in page
    train(resume=run_dir, quiet=True, progress=False)
    page = write_report([run_dir], tmp_path / "resumed.html").read_text()
    assert "finished, resumed 1x" in page


def test_bad_input_is_one_clear_line(runs, tmp_path):
    a, _ = runs
    with pytest.raises(UserError, match="not a lightship run folder"):
        write_report([tmp_path], tmp_path / "x.html")
    with pytest.raises(UserError, match="does not exist"):
        write_report([tmp_path / "nope"], tmp_path / "x.html")
    with pytest.raises(UserError, match="mkdir -p"):
        write_report([a.run_dir], tmp_path / "missing" / "x.html")
    fake = tmp_path / "fake"
    fake.mkdir()
    shutil.copy(a.run_dir / "recipe.yaml", fake / "recipe.yaml")
    (fake / "metrics.jsonl").write_text("")
    with pytest.raises(UserError, match="empty"):
        write_report([fake], tmp_path / "x.html")
    start = (a.run_dir / "metrics.jsonl").read_text().splitlines()[0]
    (fake / "metrics.jsonl").write_text(start + "\n" + '{"kind": "step", "st')  # torn
    with pytest.raises(UserError, match="no evaluation record yet") as err:
        write_report([fake], tmp_path / "x.html")
    assert "\n" not in str(err.value)


BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def _chromium():
    found = next((shutil.which(b) for b in BROWSERS if shutil.which(b)), None)
    if found:
        return found
    if os.name != "posix" or os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip("chromium is not installed (apt-get install -y chromium) and this user "
                    "cannot install it")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "install", "-y", "-q", "chromium"], ["apt-get", "update", "-q"],
                ["apt-get", "install", "-y", "-q", "chromium"]):
        try:
            done = subprocess.run(cmd, env=env, capture_output=True, timeout=120)
        except subprocess.TimeoutExpired:
            break
        if done.returncode == 0 and shutil.which("chromium"):
            return shutil.which("chromium")
    pytest.skip("chromium is missing and apt-get could not install it")


def assert_renders(page, tmp_path):
    """Screenshot ``page`` in headless Chromium (1280×2000) and check it shows text and
    coloured plots in both halves, not a blank or broken page; return the screenshot."""
    from matplotlib.image import imread

    shot = tmp_path / "shot.png"
    done = subprocess.run(
        [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}",
         "--window-size=1280,2000", page.resolve().as_uri()],
        capture_output=True, timeout=120)
    assert shot.exists(), done.stderr.decode(errors="replace")[-2000:]
    img = imread(shot)[..., :3]  # floats in [0, 1]
    assert img.shape[:2] == (2000, 1280)
    assert img.std() > 0.05
    non_white = (img < 0.9).any(axis=2)
    assert non_white.mean() > 0.03
    colored = (img.max(axis=2) - img.min(axis=2)) > 0.25  # plots, badges, bands
    assert colored.mean() > 0.002
    assert non_white[1000:].mean() > 0.01  # the lower half is not empty (plots rendered)
    return shot


def test_report_looks_right_in_a_browser(runs, tmp_path):
    """Render the page in headless Chromium: the screenshot must show text, tables and the
    (colored) plots, not a blank or broken page."""
    a, b = runs
    page = write_report([a.run_dir, b.run_dir], tmp_path / "report.html",
                        reference=a.run_dir)
    assert_renders(page, tmp_path)


def test_tensorboard_scalars(runs, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _, b = runs
    log_dir = write_scalars(b.run_dir, tmp_path / "tb")
    write_scalars(b.run_dir, tmp_path / "tb")  # a re-run replaces, never duplicates
    assert len(list(log_dir.glob("events.out.tfevents.*"))) == 1
    acc = EventAccumulator(str(log_dir))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"train/loss", "train/lr", "train/ce", "train/kd", "train/hint", "eval/test_top1",
            "eval/train_loss"} <= tags
    assert len(acc.Scalars("eval/test_top1")) == 6
    assert len(acc.Scalars("train/loss")) == b.summary["steps"]


def test_tensorboard_from_the_cli(runs, tmp_path, capsys):
    pytest.importorskip("tensorboard")
    a, b = runs
    argv = [str(a.run_dir), str(b.run_dir), "-o", str(tmp_path / "r.html")]
    assert _report_cli([*argv, "--tensorboard-dir", str(tmp_path / "tb")]) == 0
    for name in ("a", "b"):
        assert list((tmp_path / "tb" / name).glob("events.out.tfevents.*"))
    assert f"tensorboard --logdir {tmp_path / 'tb'}" in capsys.readouterr().out


def test_tensorboard_missing_names_the_extra(runs, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails
    with pytest.raises(UserError, match=r"pip install 'lightship\[tensorboard\]'"):
        write_scalars(runs[0].run_dir)
