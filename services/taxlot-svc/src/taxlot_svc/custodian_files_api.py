"""taxlot-svc's routes of a custodian day's original files, kept for audit (docs/custodian-files.md,
*Original files*): the inbox watcher keeps every file of a set as delivered, also of a set it
refuses; operations read them back byte for byte."""

from collections.abc import AsyncIterator
from datetime import date
from typing import Annotated, Any

from ballast_common.app import RuntimeDep
from ballast_common.auth import CanOperate
from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from taxlot_svc import custodian_ingest
from taxlot_svc import custodian_ingest_repository as ingest_repo
from taxlot_svc.custodian_ingest import KeptFile

router = APIRouter(tags=["custodian files"])

ROUTE = "/custodian-days/{custodian}/{business_date}/files"
MAX_FILE_BYTES = 1 << 30  # as a staged upload's (ServiceSettings.max_upload_bytes)
Custodian = Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]
FileName = Annotated[
    str,
    Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$", description="the file's name as delivered"),
]
Sha256 = Annotated[str | None, Query(pattern=r"^[0-9a-fA-F]{64}$")]


class KeptFileOut(BaseModel):
    id: int
    custodian: str
    business_date: date
    name: str
    size: int
    sha256: str = Field(description="of the bytes kept")
    manifest_sha256: str | None = Field(description="what the set's manifest said, if given")
    matches_manifest: bool | None
    received_by: str
    received_at: Any
    repeated: bool = Field(default=False, description="these bytes were kept already")


class KeptFilesOut(BaseModel):
    files: list[KeptFileOut] = Field(description="every version, by name, newest first")


@router.put(
    ROUTE + "/{name}",
    status_code=201,
    summary="Keep a file of a custodian's day as delivered (streamed; every version kept)",
    response_model=KeptFileOut,
    max_body_size=MAX_FILE_BYTES,
    openapi_extra={
        "requestBody": {"content": {"application/octet-stream": {"schema": {"type": "string"}}}}
    },
)
async def put_file(
    custodian: Custodian,
    business_date: date,
    name: FileName,
    request: Request,
    runtime: RuntimeDep,
    caller: CanOperate,
    manifest_sha256: Sha256 = None,
) -> dict[str, Any]:
    where = KeptFile(caller.tenant, custodian, business_date, name)
    async with runtime.db.sessions() as session, session.begin():
        return await custodian_ingest.keep_file(
            session,
            where,
            caller.subject,
            manifest_sha256.lower() if manifest_sha256 else None,
            request.stream(),
        )


@router.get(ROUTE, summary="The kept files of a custodian's day", response_model=KeptFilesOut)
async def get_files(
    custodian: Custodian, business_date: date, runtime: RuntimeDep, caller: CanOperate
) -> dict[str, Any]:
    async with runtime.db.sessions() as session:
        return await custodian_ingest.kept_files(session, caller.tenant, custodian, business_date)


@router.get(
    ROUTE + "/{name}",
    summary="A kept file's bytes as delivered (the newest version, or `sha256`'s)",
    response_class=StreamingResponse,
)
async def get_file(
    custodian: Custodian,
    business_date: date,
    name: FileName,
    runtime: RuntimeDep,
    caller: CanOperate,
    sha256: Sha256 = None,
) -> StreamingResponse:
    where = KeptFile(caller.tenant, custodian, business_date, name)
    async with runtime.db.sessions() as session:
        found = await custodian_ingest.kept_file(session, where, sha256)

    async def content() -> AsyncIterator[bytes]:
        async with runtime.db.sessions() as session:
            async for chunk in ingest_repo.file_chunks(session, found["id"]):
                yield chunk

    return StreamingResponse(
        content(),
        media_type="application/octet-stream",
        headers={
            "content-length": str(found["size"]),
            "content-disposition": f'attachment; filename="{name}"',
            "x-content-sha256": found["sha256"],
        },
    )
