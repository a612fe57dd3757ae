"""benchmarks/burda_table1.py: the protocol it states (Burda, Grosse and Salakhutdinov 2016,
section 5 and Table 1) and its errors."""

import importlib.util
import math
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _burda():
    path = ROOT / "benchmarks" / "burda_table1.py"
    spec = importlib.util.spec_from_file_location("burda_table1", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["burda_table1"] = module
    spec.loader.exec_module(module)
    return module


def test_the_stages_are_the_papers():
    """Stage i: 3^i epochs at 1e-3 * 10^(-i/7), i = 0 .. 7: 3,280 epochs in all."""
    plan = _burda().stage_plan(8)
    assert [i for i, _, _ in plan] == list(range(8))
    assert plan[-1][2] == 3280 and [total for *_, total in plan][:3] == [1, 4, 13]
    for i, lr, _ in plan:
        assert lr == pytest.approx(1e-3 * 10 ** (-i / 7), rel=1e-15)
    assert math.isclose(plan[-1][1], 1e-4, rel_tol=1e-15)


@pytest.mark.parametrize("stages", ["9", "0"])
def test_stages_out_of_range_is_one_error_line(stages, tmp_path, capsys):
    """--stages 9 raised SystemExit("burda_table1: --stages must be in 1..8"): exit status 1
    and not the scripts' '<script>.py: error:' line."""
    with pytest.raises(SystemExit) as info:
        _burda().main(["--data-dir", str(tmp_path), "--stages", stages, "--out", str(tmp_path)])
    assert info.value.code == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1, err
    assert err.startswith("burda_table1.py: error: argument --stages: ") and "1 to 8" in err
    assert list(tmp_path.iterdir()) == []


def test_the_table_says_which_bound_it_shows():
    """burda-table1.md (the table the README quotes) showed '-log p(x)' from a quick run
    (--k-test 500 --n-test 200) exactly as from the paper's k = 5000 on all 10,000 test images:
    it now says the k and the images under the table, and when they are not the paper's."""
    burda = _burda()
    row = {"model": "VAE k=1", "epochs": 1, "test_nll": 128.52, "published": 86.76}
    quick = burda.markdown([{**row, "k_test": 500, "n_test": 200}])
    assert "| VAE k=1 | 1 | 128.52 | 86.76 |" in quick
    assert "k = 500" in quick and "first 200 of the 10,000 test images" in quick
    assert "not the paper's" in quick
    full = burda.markdown([{**row, "k_test": 5000, "n_test": 10000}])
    assert "k = 5000" in full and "all 10,000 test images" in full
    assert "not the paper's" not in full
    assert full.rstrip().endswith("Table 1, one stochastic layer.")
