"""The errors of dataset loading (``winnow.search_space.datasets`` re-exports them): a module
of their own so that the loaders of user data (``user_data``, ``image_folder``, ``hf_data``)
raise them without importing the registry that registers them."""

from __future__ import annotations


class DatasetError(RuntimeError):
    """A dataset that cannot be loaded, with what to do about it."""


class DatasetSpecError(DatasetError, ValueError):
    """A dataset spec whose argument no loader accepts (``npz:`` without a path,
    ``synthetic:0``): known without loading anything, so a spec check reports it (a
    ValueError, as a registry's unknown name is)."""
