"""What both FIX ends of Ballast add to asyncfix 1.0.1's session layer (docs/fix.md): the
gateway's initiator and the custodian simulator's acceptor. Needs the `fix` extra
(`ballast-common[fix]`, asyncfix pinned).

1. `FramedCodec`: the engine's decoder takes a socket read that ends inside the next
   message's `8=FIX.` as part of the message before (whose checksum then fails: dropped),
   and drops a lone partial `8=FI` as garbage: a sequence gap and a resend under any steady
   stream. Framing each message by its BodyLength first avoids both.
2. `IgnoresOldPossDups`: a resent message (PossDupFlag=Y) below the expected sequence
   number was received before and is ignored, as FIX prescribes; the engine logs out.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from asyncfix import FMsg, FTag
from asyncfix.codec import Codec
from asyncfix.message import FIXMessage

log = logging.getLogger(__name__)

# BeginString and BodyLength: where a message's body starts and how long it is.
_HEADER = re.compile(rb"8=FIX\.[0-9.]+\x019=([0-9]{1,7})\x01")
_CHECKSUM_FIELD_LENGTH = len(b"10=000\x01")


class FramedCodec(Codec):
    """asyncfix's decoder, given one whole message at a time."""

    def decode(self, rawmsg: bytes, silent: bool = True) -> tuple[Any, int, Any]:
        start = rawmsg.find(b"8=FIX.")
        if start == -1:  # keep what may be the start of `8=FIX.`, drop the rest
            return None, max(0, len(rawmsg) - len(b"8=FIX")), None
        header = _HEADER.match(rawmsg, start)
        if header is None:
            if len(rawmsg) - start < 32:  # the header itself is not all here yet
                return None, start, None
            return super().decode(rawmsg, silent)  # garbled: the engine skips it
        end = header.end() + int(header.group(1)) + _CHECKSUM_FIELD_LENGTH
        if len(rawmsg) < end:
            return None, start, None
        return super().decode(rawmsg[:end], silent)


class IgnoresOldPossDups:
    """Mixed in before asyncfix's connection class: an old resent message is ignored."""

    _session: Any

    async def _process_message(self, msg: FIXMessage, raw_msg: bytes) -> None:
        if msg.get(FTag.PossDupFlag, "N") == "Y" and msg.msg_type != FMsg.SEQUENCERESET:
            seq = int(msg.get(FTag.MsgSeqNum, "0"))
            if 0 < seq < self._session.next_num_in:
                log.info("FIX duplicate ignored", extra={"msg_seq_num": seq})
                return
        await super()._process_message(msg, raw_msg)  # type: ignore[misc]
