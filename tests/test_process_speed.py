"""What a training process does for speed outside the loop: a run that does not compile never
imports torch._dynamo, trains the same weights as with it and leaves torch as it found it
(lightship.train.dynamo); a training process keeps freed memory (lightship.train.malloc). Each
case runs in a fresh interpreter: the test session may have imported torch._dynamo already, and
the allocator's settings are per process."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _python(code: str, *args: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300,
                          env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


TRAIN = """
    import hashlib, json, sys
    from pathlib import Path
    import torch
    torch.set_num_threads(1)
    if sys.argv[2] == "real":
        import torch._dynamo
    from lightship.api import train
    from tests.conftest import tiny_recipe
    # EMA, mixup, label smoothing, SGD with momentum, warmup + cosine: the optimizer, the
    # scheduler, AveragedModel, checkpoints (state_dict) and model_stats all run.
    run = train(tiny_recipe(Path(sys.argv[1]), "train.ema=0.9"), quiet=True)
    from safetensors.torch import load_file
    tensors = load_file(run.run_dir / "weights.safetensors")  # metadata names the run: skip it
    digest = hashlib.sha256(b"".join(tensors[k].numpy().tobytes() for k in sorted(tensors)))
    digest = digest.hexdigest()
    print(json.dumps({"dynamo": "torch._dynamo" in sys.modules, "sha": digest,
                      "top1": run.test_top1}))
"""


def test_run_skips_dynamo_import_and_trains_the_same_weights(tmp_path):
    skipped = _python(TRAIN, str(tmp_path / "a"), "skipped")
    real = _python(TRAIN, str(tmp_path / "b"), "real")
    assert skipped["dynamo"] is False  # the ~2.5 s import never happened
    assert real["dynamo"] is True
    assert skipped["sha"] == real["sha"] and skipped["top1"] == real["top1"]


def test_compiled_run_is_left_alone():
    out = _python("""
        import json, sys
        from lightship.train.dynamo import dynamo_import_skipped
        with dynamo_import_skipped(enabled=False) as active:
            pass
        print(json.dumps({"active": active, "dynamo": "torch._dynamo" in sys.modules}))
    """)
    assert out == {"active": False, "dynamo": False}


def test_stand_in_hands_over_to_the_real_module_and_cleans_up():
    out = _python("""
        import json, sys
        import torch
        from torch.optim import Optimizer
        from lightship.train.dynamo import dynamo_import_skipped
        p = torch.zeros(2, requires_grad=True)
        seen = {}
        with dynamo_import_skipped() as active:
            opt = torch.optim.SGD([p], lr=0.1)          # add_param_group: disable()
            p.sum().backward(); opt.step(); opt.zero_grad()  # graph_break(), disable()
            seen["stand_in"] = type(sys.modules["torch._dynamo"]).__name__
            marked = hasattr(Optimizer.zero_grad.__wrapped__, "__dynamo_disable")
            seen["marked_inside"] = marked
        seen["left_after"] = "torch._dynamo" in sys.modules
        seen["mark_after"] = hasattr(Optimizer.zero_grad.__wrapped__, "__dynamo_disable")
        with dynamo_import_skipped():
            cfg = torch._dynamo.config                    # an attribute: the real package
            import torch._dynamo.utils as utils           # a submodule, loaded once
            seen["real"] = type(sys.modules["torch._dynamo"]).__name__
            seen["same_utils"] = utils is sys.modules["torch._dynamo.utils"]
            seen["cfg_module"] = cfg.__name__
        seen["kept_real"] = type(sys.modules["torch._dynamo"]).__name__
        with dynamo_import_skipped() as again:            # paid already: nothing to do
            seen["again"] = again
        seen["active"] = active
        print(json.dumps(seen))
    """)
    assert out == {"stand_in": "_StandIn", "marked_inside": True, "left_after": False,
                   "mark_after": False, "real": "module", "same_utils": True,
                   "cfg_module": "torch._dynamo.config", "kept_real": "module", "again": False,
                   "active": True}


def test_training_process_keeps_freed_memory():
    """`lightship` sets glibc's malloc to reuse freed activations: no page faults per step
    (lightship.train.malloc). glibc's default gives them back and faults them in every step."""
    step = """
        import json, resource, sys
        from lightship.train.malloc import keep_freed_memory
        kept = keep_freed_memory() if sys.argv[1] == "keep" else None
        import torch
        from lightship.models import create_model
        torch.manual_seed(0)
        m = create_model("fastcnn", num_classes=10, in_chans=1).to(
            memory_format=torch.channels_last)
        opt = torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9)
        x = torch.randn(64, 1, 28, 28).to(memory_format=torch.channels_last)
        def step():
            m(x).logsumexp(1).mean().backward(); opt.step(); opt.zero_grad()
        for _ in range(5):
            step()
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(20):
            step()
        faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 20
        print(json.dumps({"kept": kept, "faults": faults}))
    """
    if not sys.platform.startswith("linux"):
        return
    keep, default = _python(step, "keep"), _python(step, "default")
    assert keep["kept"] is True
    assert keep["faults"] < 50, (keep, default)  # default glibc: hundreds per step here
