"""custodian-gateway's event handlers (registered in main.py)."""

from ballast_common.contracts.envelope import Envelope
from ballast_common.contracts.events import TradesApprovedV1
from ballast_common.uow import UnitOfWork

from custodian_gateway import service


async def on_trades_approved(
    uow: UnitOfWork, envelope: Envelope, payload: TradesApprovedV1
) -> None:
    await service.record_approved_trades(uow, payload, envelope.tenant)
