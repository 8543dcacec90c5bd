import types

import pytest

from fplib.augment import AugmentConfig
from fplib.config import ParameterError, check_type, from_dict, notebook_params, to_dict


def test_from_dict_strict():
    cfg = from_dict(AugmentConfig, {"snr_db": [0, 20], "noise_p": 1})
    assert cfg.snr_db == (0.0, 20.0) and cfg.noise_p == 1.0
    with pytest.raises(ParameterError, match="unknown parameter.*snr_range"):
        from_dict(AugmentConfig, {"snr_range": [0, 20]})
    with pytest.raises(ParameterError, match="'noise_p': expected float"):
        from_dict(AugmentConfig, {"noise_p": "high"})
    with pytest.raises(ParameterError, match="expected 2 items"):
        from_dict(AugmentConfig, {"snr_db": [0, 5, 10]})
    assert from_dict(AugmentConfig, to_dict(cfg)) == cfg


@pytest.mark.parametrize(
    "value,ann,ok",
    [
        (1, int, True),
        (True, int, False),
        (1.5, int, False),
        (1, float, True),
        ("a", str, True),
        (None, str, False),
        (None, str | None, True),
        ([1, 2], list[int], True),
        ([1, "x"], list[int], False),
        ({"a": 1}, dict, True),
        (False, bool, True),
        (0, bool, False),
    ],
)
def test_check_type(value, ann, ok):
    if ok:
        check_type("p", value, ann)
    else:
        with pytest.raises(ParameterError, match="'p"):
            check_type("p", value, ann)


def _namespace(**injected):
    ns = {
        "__annotations__": {"seed": int, "name": str, "snr": list[float]},
        "seed": 0,
        "name": "demo",
        "snr": [0.0, 10.0],
        "types": types,
        "print": print,
        "_private": 1,
        "In": [],
        "Out": {},
    }
    ns.update(injected)
    return ns


def test_notebook_params():
    p = notebook_params(_namespace())
    assert (p.seed, p.name, p.snr) == (0, "demo", [0.0, 10.0])
    assert notebook_params(_namespace(seed=5)).seed == 5  # papermill override
    with pytest.raises(ParameterError, match=r"unknown parameter\(s\) \['sed'\]"):
        notebook_params(_namespace(sed=5))  # a typo must not fall back to the default
    with pytest.raises(ParameterError, match="'seed': expected int"):
        notebook_params(_namespace(seed="5"))
    with pytest.raises(ParameterError, match="no annotated parameters"):
        notebook_params({"x": 1})


def test_notebook_params_can_be_rerun_interactively():
    ns = _namespace()
    notebook_params(ns)
    ns["P"] = 1  # later cells define names; re-running the check cell must not call them parameters
    assert notebook_params(ns).seed == 0
