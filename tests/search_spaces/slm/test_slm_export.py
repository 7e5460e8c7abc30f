"""Saving a hybrid SLM: checkpoint + JSON config rebuild the model without the space."""
import pytest

from search_spaces.slm.export import load_slm


def test_load_missing_path_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_slm(tmp_path / "nowhere")
