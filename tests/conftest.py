"""Shared test configuration.

This file being here (outside any package) makes pytest put ``tests/`` on ``sys.path``, so
tests import their helpers as ``from helpers.protocol_pair import ProtocolPair``. The tests
directories are deliberately not packages: putting the repository root on ``sys.path`` would
make ``crdt_sync`` resolve to the source folder, where ``crdt_sync.server`` and
``crdt_sync.client`` do not exist (they are mapped from ``server/`` and ``client/`` only in
the installed package).
"""
