"""The model registry: trained models in object storage, the promotion gate, rollback.

- ``gate``: pure logic, whether a candidate's numbers earn it promotion;
- ``records``: the ``models`` table (the one writer), every change with a NOTIFY;
- ``files``: a model directory up to object storage and back into a local cache,
  each file checked by size and sha256;
- ``candidates``: a finished run's output registered, and promoted when the gate says so.
"""
