"""The error both component loaders raise (components.py for the Diffusers-format folders, official.py for the
official release's files): a leaf module, so neither loader imports the other for it."""


class ComponentError(Exception):
    """A component folder is missing or incomplete (names the folder and what it lacks)."""
