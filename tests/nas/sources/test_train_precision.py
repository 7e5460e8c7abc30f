"""The ``train`` accuracy source with a precision axis: precision variants of one network
share one training, and an int8 variant scores its quantized network."""
import numpy as np

import nas.sources.train as train_module
from hardware.store import MeasurementStore
from nas.accuracy import candidate_accuracy
from nas.sources import ACCURACY_SOURCES, RunContext, make_source
from search_spaces import make_space

SPACE = {"resolutions": [32], "widths": [0.5], "depths": [2], "kernels": [3], "expansions": [3],
         "num_classes": 10, "precisions": ["fp32", "int8"]}


def test_variants_share_one_training_and_int8_scores_the_quantized_network(tmp_path, monkeypatch):
    trainings = []
    real = train_module.train_candidate

    def counting(model, splits, settings, seed, on_epoch=None):
        trainings.append(seed)
        return real(model, splits, settings, seed, on_epoch)

    monkeypatch.setattr(train_module, "train_candidate", counting)
    space = make_space("mbv3", **SPACE)
    arch = space.float_arch(space.sample(np.random.default_rng(0)))
    int8 = space.with_precisions(arch, {u: "int8" for u in space.precision_units(arch)})
    with MeasurementStore(tmp_path / "m.db") as store:
        ctx = RunContext(space, store, tmp_path, seed=3, progress=False)
        source = make_source({"train": "digits", "epochs": 1, "batch_size": 32, "threads": 2},
                             ACCURACY_SOURCES, ctx, "accuracy")
        float_row, int8_row = source.evaluate([arch, int8])
        assert len(trainings) == 1
        # the same weights, quantized as the source says it does
        model = source.trained_model(int8)
        splits = source._splits(arch)
        expected = candidate_accuracy(space, int8, model, splits, 128, source.calibration_inputs(int8))
        assert int8_row["accuracy"] == expected
        assert float_row["accuracy"] == candidate_accuracy(space, arch, model, splits, 128, [])
        # cached per canonical string: evaluating again trains nothing (the 2nd was trained_model)
        assert source.evaluate([int8, arch]) == [int8_row, float_row] and len(trainings) == 2


def test_per_tensor_scoring_is_its_own_scheme_and_must_match_the_latency_source(tmp_path):
    space = make_space("mbv3", **SPACE)
    arch = space.float_arch(space.sample(np.random.default_rng(0)))
    int8 = space.with_precisions(arch, {u: "int8" for u in space.precision_units(arch)})
    options = {"train": "digits", "epochs": 1, "batch_size": 32, "threads": 2}
    with MeasurementStore(tmp_path / "m.db") as store:
        ctx = RunContext(space, store, tmp_path, seed=3, progress=False)
        channel = make_source(options, ACCURACY_SOURCES, ctx, "accuracy")
        tensor = make_source({**options, "int8_weights": "per_tensor"}, ACCURACY_SOURCES, ctx, "accuracy")
        assert tensor.key != channel.key and tensor.int8_weights() == "per_tensor"
        (row,) = tensor.evaluate([int8])
        model = tensor.trained_model(int8)
        assert row["accuracy"] == candidate_accuracy(space, int8, model, tensor._splits(arch), 128,
                                                     tensor.calibration_inputs(int8), "per_tensor")
        # a float-only space keeps the key it had before int8 existed
        float_ctx = RunContext(make_space("mbv3", **{**SPACE, "precisions": ["fp32"]}), store, tmp_path, seed=3,
                               progress=False)
        assert "int8_scheme" not in make_source(options, ACCURACY_SOURCES, float_ctx, "accuracy").fingerprint()
