"""The runnable examples in python/ keep working."""
import importlib.util
import os

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.skipif(torch.cuda.is_available(), reason="CPU smoke test")
def test_spsa_example_lowers_the_loss():
    spec = importlib.util.spec_from_file_location("spsa", os.path.join(ROOT, "python", "spsa_step_example.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    first, last = mod.main()
    assert last < 0.5 * first


@pytest.mark.skipif(torch.cuda.is_available(), reason="CPU smoke test")
@pytest.mark.parametrize("method, drop, extra", [("mezo", 0.3, []), ("bszo", 0.3, []), ("agzo", 0.1, []),
                                                ("zoact", 0.1, []), ("zoact", 0.1, ["--base-bits", "4"])])
def test_finetune_recipe_lowers_the_loss(method, drop, extra):
    spec = importlib.util.spec_from_file_location("recipe", os.path.join(ROOT, "python", "zo_finetune_opt.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    first, last = mod.main(["--method", method, "--steps", "40", "--k", "2", *extra])
    assert last < first - drop, (first, last)
