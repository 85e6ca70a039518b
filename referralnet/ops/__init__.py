"""Operations and audit tools (DESIGN §5): replay, republish, dead letters, status.

Each module is a plain async API the CLI (``referralnet.cli``) and the API's ``/metrics``
call into; none of them needs the worker processes to stop.
"""
