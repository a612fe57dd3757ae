"""One rule for the values a model is given (finite; in [0, 1] for a Bernoulli likelihood), said
the same way whether a backend array reaches a model (check_targets, ValueError) or a host array
becomes a data set (validate_values, DataError, read in chunks of rows)."""

from __future__ import annotations

import numpy as np
import pytest

from scratchvae import inputs
from scratchvae.data import DataError, validate_values
from scratchvae.inputs import check_targets

_GREY = np.random.default_rng(0).random((50, 16))


def _with_nan(row: int) -> np.ndarray:
    x = _GREY.copy()
    x[row, 3] = np.nan
    return x


@pytest.mark.parametrize(
    "x",
    [_GREY * 255, _GREY * 5 - 1, _GREY * 300, _with_nan(37), np.where(_GREY > 0.5, np.inf, _GREY)],
    ids=["grey-levels", "beyond", "beyond-255", "nan", "inf"],
)
def test_a_model_and_a_data_set_refuse_the_same_values_in_the_same_words(x):
    with pytest.raises(ValueError) as model_err:
        check_targets(x, "bernoulli", "the data")
    with pytest.raises(DataError) as data_err:
        validate_values(x, "bernoulli", "the data")
    assert type(model_err.value) is ValueError
    assert str(model_err.value) == str(data_err.value)


def test_the_first_row_with_nan_is_named_in_chunks_too(monkeypatch):
    monkeypatch.setattr(inputs, "SCAN_ELEMENTS", 16 * 4)  # 4 rows a chunk: row 37 in the 10th
    for check in (check_targets, validate_values):
        with pytest.raises(ValueError, match=r"contains NaN or Inf \(first in row 37\); remove"):
            check(_with_nan(37), "gaussian", "the data")


def test_grey_levels_are_told_to_divide_by_255_and_other_values_are_not():
    lo, hi = (_GREY * 255).min(), (_GREY * 255).max()
    with pytest.raises(ValueError) as err:
        check_targets(_GREY * 255, "bernoulli", "x")
    assert str(err.value) == (
        f"x has values in [{lo:g}, {hi:g}] but the Bernoulli likelihood needs [0, 1]; divide "
        "8-bit grey levels by 255, else min-max scale to [0, 1], or use a Gaussian likelihood "
        "(--likelihood gaussian, likelihood='gaussian')"
    )
    with pytest.raises(ValueError) as err:
        check_targets(_GREY * 300, "bernoulli", "x")
    assert "divide" not in str(err.value)
    check_targets(_GREY * 300, "gaussian", "x")  # any finite values for a Gaussian decoder
    assert validate_values(_GREY * 300, "gaussian") == (_GREY.min() * 300, _GREY.max() * 300)


def test_value_range_takes_any_shape():
    assert inputs.value_range(np.zeros((0, 3)), "x") == (np.inf, -np.inf)
    assert inputs.value_range(np.zeros((3, 0)), "x") == (np.inf, -np.inf)
    assert inputs.value_range(np.array(2.0), "x") == (2.0, 2.0)
    assert inputs.value_range(np.arange(5.0), "x") == (0.0, 4.0)
    assert inputs.value_range(np.arange(24).reshape(2, 3, 4), "x") == (0.0, 23.0)
    with pytest.raises(ValueError, match=r"first in row 4\)"):
        inputs.value_range(np.array([0, 1, 2, 3, np.inf]), "x")
