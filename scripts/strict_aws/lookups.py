"""Indexed lookups of moto's IAM roles and STS sessions.

moto finds a role by name or ARN, and an STS session by its access key, by scanning every role or
every session it ever issued. It does so on every request signed with a session's key (moto's
"last used" bookkeeping), and the strict layer does so again for its permission and deny rules.
With thousands of jobs (a task role each, two sessions per worker run) each request then costs
milliseconds of Python, and the operator benchmark measures moto's scans instead of ferry.

This module answers the same lookups from indexes. It changes no answer:
- a cached role is used only while moto still holds that very object under its id with the same
  name and ARN; otherwise the lookup falls back to moto's own scan and re-indexes;
- sessions are only ever appended (moto has no API that removes one), so the index reads each
  backend's list from where it last stopped, and starts over when the list is replaced (a reset).
"""

import threading

from moto.iam.models import IAMBackend
from moto.sts.models import sts_backends

_LOCK = threading.Lock()

# ---------------------------------------------------------------------------------------------
# Roles

_scan_by_name = IAMBackend.get_role
_scan_by_arn = IAMBackend.get_role_by_arn
_BY_NAME: dict = {}  # (id(backend), name) -> role
_BY_ARN: dict = {}  # (id(backend), arn) -> role


def _current(backend, role, name=None, arn=None):
    """The cached role if moto still holds it unchanged, else None."""
    if role is None or backend.roles.get(role.id) is not role:
        return None
    if (name is not None and role.name != name) or (arn is not None and role.arn != arn):
        return None
    return role


def get_role(self, role_name):
    role = _current(self, _BY_NAME.get((id(self), role_name)), name=role_name)
    if role is None:
        role = _scan_by_name(self, role_name)  # raises NotFound as moto does
        _BY_NAME[(id(self), role_name)] = role
    return role


def get_role_by_arn(self, arn):
    role = _current(self, _BY_ARN.get((id(self), arn)), arn=arn)
    if role is None:
        role = _scan_by_arn(self, arn)
        _BY_ARN[(id(self), arn)] = role
    return role


IAMBackend.get_role = get_role
IAMBackend.get_role_by_arn = get_role_by_arn

# ---------------------------------------------------------------------------------------------
# STS sessions

_SESSIONS: dict = {}  # access key id -> moto's AssumedRole
_READ: dict = {}  # id(backend) -> (the assumed_roles list read, how many of its entries)


def _backends():
    for _, by_partition in list(sts_backends.items()):
        yield from list(by_partition.values())


def _index_new_sessions() -> None:
    for backend in _backends():
        issued = backend.assumed_roles
        seen, count = _READ.get(id(backend), (None, 0))
        if seen is not issued or count > len(issued):
            count = 0
        for role in issued[count:]:
            _SESSIONS[role.access_key_id] = role
        _READ[id(backend)] = (issued, len(issued))


def assumed_role(access_key: str):
    """The STS session (moto's AssumedRole: `arn`, `policy`) behind an access key, if any."""
    with _LOCK:
        role = _SESSIONS.get(access_key)
        if role is None:
            _index_new_sessions()
            role = _SESSIONS.get(access_key)
        return role


def reset() -> None:
    """Forgets every index (after moto's own reset, which replaces its backends)."""
    with _LOCK:
        _SESSIONS.clear()
        _READ.clear()
        _BY_NAME.clear()
        _BY_ARN.clear()
