"""The monitor: decode, join and consensus per sample, per-teacher drift detection, outputs.

``pipeline`` is one partition's processing, ``partition`` its durable state, ``service``
the long-lived ``distill serve`` loop, ``replay`` the same pipeline over an archive,
``status`` what ``distill status`` reads back, ``demo`` the embedded end-to-end run.
"""
