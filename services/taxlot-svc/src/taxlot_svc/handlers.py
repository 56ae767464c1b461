"""taxlot-svc's event handlers."""

from ballast_common.contracts.envelope import Envelope
from ballast_common.contracts.events import FillsReceivedV1
from ballast_common.uow import UnitOfWork

from taxlot_svc import service


async def on_fills_received(uow: UnitOfWork, envelope: Envelope, payload: FillsReceivedV1) -> None:
    await service.apply_fill(uow, payload, event_id=envelope.id)
