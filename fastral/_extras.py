"""The optional dependency groups ("extras") of the distribution, and the message naming the one to install.

The featurizers (``import fastral``) need only torch and numpy; the AL pipeline and the training CLI need the
``[al]`` extra.
"""

from __future__ import annotations

DISTRIBUTION = "fastral-al"  #: the name on package indexes (``fastral`` there is an unrelated project)
#: The packages of the ``[al]`` extra: import name -> distribution name.
AL_EXTRA = {"h5py": "h5py", "PIL": "pillow", "tqdm": "tqdm", "matplotlib": "matplotlib", "scipy": "scipy"}


def missing_extra(command: str, error: ModuleNotFoundError) -> BaseException:
    """The exit that ``command`` raises when an import failed for want of a package of the ``[al]`` extra; an
    import error of anything else is returned unchanged, to be raised as it is."""
    top = (error.name or "").split(".")[0]
    if top not in AL_EXTRA:
        return error
    return SystemExit(
        f"{command} needs fastral's [al] extra, and {AL_EXTRA[top]} is not installed: "
        f'pip install "{DISTRIBUTION}[al]" (from a checkout: pip install ".[al]")'
    )
