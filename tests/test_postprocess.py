import numpy as np
import pytest
from omegaconf import OmegaConf

from tcurseg.engine.evaluator import inference_options
from tcurseg.engine.postprocess import keep_largest_components


def _blobs() -> np.ndarray:
    pred = np.zeros((20, 20, 20), dtype=np.int64)
    pred[2:8, 2:8, 2:8] = 1      # 216 voxels (left hippocampus)
    pred[12:17, 12:17, 12:17] = 1  # 125 voxels (right)
    pred[2:4, 15:17, 2:4] = 1    # 8-voxel island
    pred[18, 18, 18] = 1         # 1-voxel island, touching nothing
    return pred


def test_keeps_the_n_largest_components_of_a_region():
    pred = _blobs()
    two = keep_largest_components(pred, {"hippocampus": [1]}, {"hippocampus": 2})
    assert int(two.sum()) == 216 + 125
    assert two[18, 18, 18] == 0 and two[2, 15, 2] == 0 and two[5, 5, 5] == 1 and two[14, 14, 14] == 1
    one = keep_largest_components(pred, {"hippocampus": [1]}, {"hippocampus": 1})
    assert int(one.sum()) == 216
    assert int(keep_largest_components(pred, {"hippocampus": [1]}, {}).sum()) == int(pred.sum())
    assert int(pred.sum()) == 216 + 125 + 8 + 1  # the input is left as it was


def test_diagonal_neighbours_are_one_component():
    pred = np.zeros((6, 6, 6), dtype=np.int64)
    pred[1, 1, 1] = pred[2, 2, 2] = 1  # 26-connected
    pred[4, 4, 4] = 1
    kept = keep_largest_components(pred, {"r": [1]}, {"r": 1})
    assert int(kept.sum()) == 2 and kept[4, 4, 4] == 0


def test_nested_region_drops_every_label_of_a_dropped_component():
    pred = np.zeros((20, 20, 20), dtype=np.int64)
    pred[2:10, 2:10, 2:10] = 2   # oedema
    pred[4:8, 4:8, 4:8] = 1      # core inside it
    pred[14:16, 14:16, 14:16] = 4  # a separate small enhancing island
    regions = {"TC": [1, 4], "WT": [1, 2, 4], "ET": [4]}
    kept = keep_largest_components(pred, regions, {"WT": 1})
    assert set(np.unique(kept).tolist()) == {0, 1, 2}
    assert int((kept == 1).sum()) == 64 and int((kept == 2).sum()) == 512 - 64


def test_empty_region_and_bad_settings():
    empty = np.zeros((5, 5, 5), dtype=np.int64)
    assert not keep_largest_components(empty, {"r": [1]}, {"r": 2}).any()
    with pytest.raises(ValueError, match=r"names \['WT'\], not regions of the data \(\['hippocampus'\]; "):
        keep_largest_components(empty, {"hippocampus": [1]}, {"WT": 1})
    with pytest.raises(ValueError, match=r"keep_components.r must be >= 1, got 0"):
        keep_largest_components(empty, {"r": [1]}, {"r": 0})


def test_inference_options_command_overrides_the_run_and_old_runs_have_none():
    run = OmegaConf.create({"eval": {"mirror_axes": [0], "keep_components": {"hippocampus": 2}}})
    unset = OmegaConf.create({"mirror_axes": None, "keep_components": None})
    assert inference_options(unset, run) == {"mirror_axes": [0], "keep_components": {"hippocampus": 2}}
    off = OmegaConf.create({"mirror_axes": [], "keep_components": {}})
    assert inference_options(off, run) == {"mirror_axes": [], "keep_components": {}}
    old_run = OmegaConf.create({"eval": {"overlap": 0.5}})
    assert inference_options(unset, old_run) == {"mirror_axes": [], "keep_components": {}}


def test_evaluate_command_uses_the_runs_settings_unless_given_and_can_switch_them_off():
    from hydra import compose, initialize_config_dir

    from tcurseg.paths import conf_dir

    with initialize_config_dir(config_dir=str(conf_dir()), version_base=None):
        demo = compose(config_name="config", overrides=["+experiment=demo"])
        plain = compose(config_name="evaluate", overrides=["run=somewhere"])
        off = compose(config_name="evaluate", overrides=["run=somewhere", "eval.mirror_axes=[]",
                                                         "eval.keep_components={}"])
    assert inference_options(demo.eval, demo) == {"mirror_axes": [0], "keep_components": {"hippocampus": 2}}
    assert inference_options(plain.eval, demo) == {"mirror_axes": [0], "keep_components": {"hippocampus": 2}}
    assert inference_options(off.eval, demo) == {"mirror_axes": [], "keep_components": {}}
