"""The term table: a new loss term plugs in by defining one class, and the recipe's allowed
methods, the report's term order and `--method` help all come from the table."""

from __future__ import annotations

import json

import pytest
import torch

from lightship.errors import UserError
from lightship.methods.terms import TERMS, Term, TermBatch, method_help, register, report_order
from lightship.recipe import build_recipe
from lightship.train.loop import train
from tests.conftest import tiny_recipe


@pytest.fixture
def l2_term():
    """A toy term, written the way a user adds one: a single registered class."""

    @register
    class L2Logits(Term):
        """weight·mean(z²): pulls the student's logits toward 0 (a toy regulariser)."""

        name, summary, logs = "l2logits", "toy L2 on the logits", ("l2logits",)

        def __call__(self, b: TermBatch):
            l2 = b.student_logits.float().pow(2).mean()
            return [0.01 * l2], {"l2logits": l2.detach()}

    yield L2Logits
    del TERMS["l2logits"]


def test_a_new_term_plugs_in_by_defining_one_class(l2_term, tmp_path):
    recipe = tiny_recipe(tmp_path, "method.name=l2logits", "train.epochs=2")
    res = train(recipe, progress=False, quiet=True)
    recs = [json.loads(x) for x in (res.run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in recs if r["kind"] == "step"]
    assert all(r["l2logits"] >= 0 and "ce" in r for r in steps)
    # the total is CE + 0.01·L2, as the class says
    assert all(r["loss"] == pytest.approx(r["ce"] + 0.01 * r["l2logits"], rel=1e-5)
               for r in steps)
    evals = [r for r in recs if r["kind"] == "eval"]
    assert "train_ce" in evals[-1]  # judged on its CE like every transfer run
    assert "l2logits" in report_order() and "l2logits" in method_help()
    assert res.summary["status"] == "finished"


def test_the_table_drives_recipe_checks(l2_term):
    assert build_recipe("baseline", ["method.name=kd+l2logits",
                                     "method.teacher.run=x"]).method.terms == ["kd", "l2logits"]
    with pytest.raises(UserError, match="did you mean 'l2logits'"):
        build_recipe("baseline", ["method.name=l2logit"])
    # needs_teacher comes from the class
    assert not build_recipe("baseline", ["method.name=l2logits"]).method.needs_teacher


def test_terms_are_summed_in_table_order_whatever_the_name_order():
    from lightship.methods.objective import TermObjective
    from lightship.models import create_model

    torch.manual_seed(0)
    student, teacher = create_model("cnn4", 3, 1, 8), create_model("cnn4", 3, 1, 8).eval()
    x, y = torch.randn(4, 1, 8, 8), torch.tensor([0, 1, 2, 0])
    a = build_recipe("baseline", ["method.name=hint+kd", "method.teacher.run=x"]).method
    b = build_recipe("baseline", ["method.name=kd+hint", "method.teacher.run=x"]).method
    la, ta, _ = TermObjective(a, student, teacher).loss(student, x, y)
    lb, tb, _ = TermObjective(b, student, teacher).loss(student, x, y)
    assert torch.equal(la, lb) and list(ta) == list(tb) == ["ce", "kd", "hint"]
