"""``python -m custodian_sim`` (or ``custodian-sim``): serve on SIM_HOST:SIM_PORT."""

from __future__ import annotations

import uvicorn

from custodian_sim.settings import SimSettings


def main() -> None:
    settings = SimSettings()
    uvicorn.run(
        "custodian_sim.main:app",
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
    )


if __name__ == "__main__":
    main()
