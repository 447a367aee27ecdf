"""Typed dependencies of the FastAPI routes (`Annotated` aliases, as in the FastAPI template).

Routes take `receiver: ReceiverDep` instead of reading `request.app.state` themselves; this is
the one place that knows where `main.create_app` keeps the shared `Receiver`. The POST fast
path (routes/webhooks.py) does not go through FastAPI and gets it from `ReceiverApp` directly.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from webhook_receiver.receiver import Receiver


def get_receiver(request: Request) -> Receiver:
    """The app's shared `Receiver`; a clear error if the app was not built by `create_app`."""
    receiver = getattr(request.app.state, "receiver", None)
    if not isinstance(receiver, Receiver):
        raise RuntimeError(
            "no Receiver on this app: build it with webhook_receiver.main.create_app"
        )
    return receiver


ReceiverDep = Annotated[Receiver, Depends(get_receiver)]
