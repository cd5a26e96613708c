"""nnvtv's own model families, imported as ``nnvtv.adapters``: one module (or package) per family.

Each family module holds an adapter table (:class:`nnvtv.AdapterSpec` rows and the family's
:class:`nnvtv.ModelIO`) and, where it has them, catalogue models, tasks and toy trainers, all
listed in a ``PLUGIN`` list that the entry-point group ``nnvtv.adapters`` (declared in
nnvtv's ``pyproject.toml``) registers, exactly as a third-party package's plug-in would be.
Nothing here is imported by the core; importing this package registers nothing by itself.
"""
