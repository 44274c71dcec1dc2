"""Policy engines: facts in, decision document out. Pure: no I/O, no frameworks.

A decision document is a dict::

    {"decision": "approved" | "rejected" | "referred",
     "reasons": [{"code", "message", "basis"}, ...],   # declared order; reject beats refer
     "result": {...},                                   # only when approved
     "trace": [...]}                                    # only when asked

Backends: ``compiled`` (generated Python, the default), ``interpreted`` (a
tree walker) and ``durable`` (durable_rules / Rete). All three must agree.
"""
