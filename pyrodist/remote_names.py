"""Names only the master may register: a name server that checks a registration key, and the master's side.

Every process of a cluster holds the cluster key, so a signature made with it would prove nothing: any
worker could re-register `pyrodist.master` and point new clients and workers at itself. A name server
started with a registration key (held by it and the master only, `PYRODIST_REGISTRATION_KEY`) takes a
registration only with a proof made with that key over the name, the address and a single-use nonce the
name server handed out (`protocol.registration_proof`); it removes one only through `remove_proven`, and
refuses every other change. A proof travels in the registration's metadata and is not kept, so nobody
can read one back, and a proof seen on the wire cannot be used again. Clients and workers need nothing:
the names they look up can only have been written by a holder of the key.
"""

from __future__ import annotations

import collections
import hmac
import logging
import secrets
import time
from typing import Any

import Pyro4
import Pyro4.constants
import Pyro4.errors
import Pyro4.naming

from .errors import ConfigError
from .protocol import registration_proof

log = logging.getLogger(__name__)

PROOF_TAG = "pyrodist-proof:"
"""The metadata entry of a registration that carries its proof, as `PROOF_TAG + nonce + ":" + proof`."""
NONCE_TTL = 60.0
"""Seconds a nonce may wait for its proof."""
NONCES_KEPT = 1000
"""Most nonces waiting for their proof; the oldest are forgotten first."""


@Pyro4.expose
class GuardedNameServer(Pyro4.naming.NameServer):  # type: ignore[misc]
    """Pyro4's name server, changed only with proofs of the registration key."""

    def __init__(self, storage: Any, registration_key: str) -> None:
        super().__init__(storage)
        self._registration_key = registration_key
        self._nonces: collections.OrderedDict[str, float] = collections.OrderedDict()

    def nonce(self) -> str:
        """A fresh single-use nonce for one proof (a plain Pyro4 name server has no such method)."""
        with self.lock:
            nonce = secrets.token_hex(16)
            self._nonces[nonce] = time.monotonic() + NONCE_TTL
            while len(self._nonces) > NONCES_KEPT:
                self._nonces.popitem(last=False)
            return nonce

    def register(self, name: Any, uri: Any, safe: bool = False, metadata: Any = None) -> None:
        """Register name for uri, if metadata holds a proof for both; the proof itself is not kept."""
        uri_text = str(uri.asString() if isinstance(uri, Pyro4.URI) else uri)
        entries = [m for m in metadata or () if isinstance(m, str)]
        proofs = [m[len(PROOF_TAG) :] for m in entries if m.startswith(PROOF_TAG)]
        if not any(self._proven("register", str(name), uri_text, proof) for proof in proofs):
            log.warning("refused to register %r for %s: no proof of the registration key", name, uri_text)
            raise Pyro4.errors.NamingError(
                f"this name server takes registrations only with a proof of its registration key; {name!r} was "
                "not registered (give the master PYRODIST_REGISTRATION_KEY)"
            )
        kept = [m for m in entries if not m.startswith(PROOF_TAG)]
        super().register(name, uri, safe, kept or None)

    def remove_proven(self, name: str, uri: str, proof: str) -> int:
        """Remove name if it still points at uri and proof is the registration key's for both; 1 or 0."""
        if not self._proven("remove", str(name), str(uri), str(proof)):
            raise Pyro4.errors.NamingError(f"no proof of the registration key to remove {name!r}")
        with self.lock:
            try:
                registered, _ = self.storage[name]
            except KeyError:
                return 0
            if registered != uri:
                return 0
            del self.storage[name]
            return 1

    def remove(self, name: Any = None, prefix: Any = None, regex: Any = None) -> int:
        """Refused: names are removed only with a proof (remove_proven)."""
        raise Pyro4.errors.NamingError("this name server removes names only with a proof of its registration key")

    def set_metadata(self, name: Any, metadata: Any) -> None:
        """Refused: registrations change only with a proof."""
        raise Pyro4.errors.NamingError("this name server changes no registration without a proof")

    def _proven(self, action: str, name: str, uri: str, token: str) -> bool:
        """Whether token is `nonce:proof` for a nonce handed out, still waiting, and now used up."""
        nonce, _, proof = token.partition(":")
        with self.lock:
            deadline = self._nonces.pop(nonce, None)
        if deadline is None or deadline < time.monotonic():
            return False
        expected = registration_proof(self._registration_key, action, name, uri, nonce)
        return hmac.compare_digest(proof.encode(), expected.encode())


def guard(daemon: Any, registration_key: str) -> None:
    """Serve a GuardedNameServer in place of daemon's name server, with the same entries."""
    guarded = GuardedNameServer(daemon.nameserver.storage, registration_key)
    daemon.unregister(daemon.nameserver)
    daemon.register(guarded, Pyro4.constants.NAMESERVER_NAME)
    daemon.nameserver = guarded


def _proof(ns: Any, registration_key: str, action: str, name: str, uri: str, where: str) -> str:
    """A proof for one action, over a nonce from a name server that must check it."""
    try:
        nonce = str(ns.nonce())
    except AttributeError:
        raise ConfigError(
            f"the name server at {where} does not check registrations, so the registration key would protect "
            "nothing: start it with 'pyrodist nameserver' and the same PYRODIST_REGISTRATION_KEY"
        ) from None
    return f"{nonce}:{registration_proof(registration_key, action, name, uri, nonce)}"


def register_proven(ns: Any, registration_key: str, name: str, uri: str, where: str) -> None:
    """Register name for uri with its proof."""
    proof = _proof(ns, registration_key, "register", name, uri, where)
    ns.register(name, uri, safe=False, metadata=[PROOF_TAG + proof])


def remove_proven(ns: Any, registration_key: str, name: str, uri: str, where: str) -> None:
    """Remove name if it still points at uri, with its proof."""
    ns.remove_proven(name, uri, _proof(ns, registration_key, "remove", name, uri, where))
