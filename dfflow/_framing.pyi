def frames(buf: bytes | bytearray | memoryview, version: int | None = None) -> list[tuple[int, int, int, int]]: ...
def wrap_bundle_adds(
    buf: bytes | bytearray | memoryview,
    version: int,
    bundle_id: int,
    flags: int,
    out: bytearray | None = None,
    open_xid: int | None = None,
    commit_xid: int | None = None,
) -> tuple[bytearray, list[int]]: ...
