"""Names only the master may register: a name server that checks a registration key, and the master's side.

Every process of a cluster holds the cluster key, so a signature made with it would prove nothing: any
worker could re-register `pyrodist.master` and point new clients and workers at itself. A name server
started with a registration key (held by it and the master only, `PYRODIST_REGISTRATION_KEY`) takes a
registration only with a proof made with that key (`protocol.registration_proof`, carried in the entry's
metadata), and removes one only through `remove_proven`; every other change is refused. Clients and
workers need nothing: the names they look up can only have been written by a holder of the key.
"""

from __future__ import annotations

import hmac
import logging
from typing import Any

import Pyro4
import Pyro4.constants
import Pyro4.errors
import Pyro4.naming

from .errors import ConfigError
from .protocol import registration_proof

log = logging.getLogger(__name__)

PROOF_TAG = "pyrodist-proof:"
"""The metadata entry of a registration that carries its proof."""


@Pyro4.expose
class GuardedNameServer(Pyro4.naming.NameServer):  # type: ignore[misc]
    """Pyro4's name server, changed only with proofs of the registration key."""

    def __init__(self, storage: Any, registration_key: str) -> None:
        super().__init__(storage)
        self._registration_key = registration_key

    def guarded(self) -> bool:
        """True: registrations here need proofs (a plain Pyro4 name server has no such method)."""
        return True

    def register(self, name: Any, uri: Any, safe: bool = False, metadata: Any = None) -> None:
        """Register name for uri, if metadata holds the proof for both."""
        uri_text = uri.asString() if isinstance(uri, Pyro4.URI) else uri
        proofs = [m[len(PROOF_TAG) :] for m in metadata or () if isinstance(m, str) and m.startswith(PROOF_TAG)]
        expected = registration_proof(self._registration_key, "register", str(name), str(uri_text))
        if not any(hmac.compare_digest(proof, expected) for proof in proofs):
            log.warning("refused to register %r for %s: no proof of the registration key", name, uri_text)
            raise Pyro4.errors.NamingError(
                f"this name server takes registrations only with a proof of its registration key; {name!r} was "
                "not registered (give the master PYRODIST_REGISTRATION_KEY)"
            )
        super().register(name, uri, safe, metadata)

    def remove_proven(self, name: str, uri: str, proof: str) -> int:
        """Remove name if it still points at uri and proof is the registration key's for both; 1 or 0."""
        expected = registration_proof(self._registration_key, "remove", str(name), str(uri))
        if not hmac.compare_digest(str(proof), expected):
            raise Pyro4.errors.NamingError(f"wrong proof to remove {name!r}")
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
        """Refused: the metadata holds the proof."""
        raise Pyro4.errors.NamingError("this name server changes no registration without a proof")


def guard(daemon: Any, registration_key: str) -> None:
    """Serve a GuardedNameServer in place of daemon's name server, with the same entries."""
    guarded = GuardedNameServer(daemon.nameserver.storage, registration_key)
    daemon.unregister(daemon.nameserver)
    daemon.register(guarded, Pyro4.constants.NAMESERVER_NAME)
    daemon.nameserver = guarded


def register_proven(ns: Any, registration_key: str, name: str, uri: str, where: str) -> None:
    """Register name for uri with its proof, in a name server that must check it."""
    try:
        ns.guarded()
    except AttributeError:
        raise ConfigError(
            f"the name server at {where} does not check registrations, so the registration key would protect "
            "nothing: start it with 'pyrodist nameserver' and the same PYRODIST_REGISTRATION_KEY"
        ) from None
    proof = registration_proof(registration_key, "register", name, uri)
    ns.register(name, uri, safe=False, metadata=[PROOF_TAG + proof])


def remove_proven(ns: Any, registration_key: str, name: str, uri: str) -> None:
    """Remove name if it still points at uri, with the proof a guarded name server asks for."""
    ns.remove_proven(name, uri, registration_proof(registration_key, "remove", name, uri))
