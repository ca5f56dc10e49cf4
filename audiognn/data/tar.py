"""The one-read tar iterator of the shard format (:mod:`audiognn.data.shards`).

Uncompressed tar (ustar, GNU or pax headers) read member by member with one ``read`` each. An all-zero
block is the end of the archive only when nothing but zeros follows it: a member header overwritten with
zeros is an error, not a silent end that drops the rest of the shard.
"""

from __future__ import annotations

from collections.abc import Iterator

#: One 512-byte block of zeros (two of them end a tar archive).
ZERO_BLOCK = b"\0" * 512


def _tar_size(field: bytes) -> int:
    if field[0] & 0x80:  # GNU base-256 encoding of large sizes
        return int.from_bytes(field[1:], "big")
    return int(field.split(b"\0", 1)[0].strip() or b"0", 8)


def _tar_member(stream, header: bytes) -> tuple[bytes, bytes]:
    """(type flag, data) of the member whose 512-byte ``header`` was just read; consumes its padding."""
    chksum = int(header[148:156].split(b"\0", 1)[0].strip() or b"0", 8)
    if chksum != sum(header[:148]) + 256 + sum(header[156:]):
        raise ValueError("bad tar header checksum")
    size = _tar_size(header[124:136])
    data = stream.read(size)
    if len(data) < size:
        raise ValueError(f"truncated tar member ({len(data)} of {size} bytes)")
    pad = (-size) % 512
    if pad and len(stream.read(pad)) < pad:
        raise ValueError("truncated tar padding")
    return header[156:157], data


def _header_name(header: bytes) -> str:
    name = header[:100].split(b"\0", 1)[0].decode("utf-8", "replace")
    ustar = header[257:262] == b"ustar"
    prefix = header[345:500].split(b"\0", 1)[0].decode("utf-8", "replace") if ustar else ""
    return f"{prefix}/{name}" if prefix else name


def iter_tar(stream) -> Iterator[tuple[str, bytes]]:
    """(member name, bytes) of the regular files of an uncompressed tar stream (ustar, GNU or pax headers).

    Hand-written because Python's streaming ``tarfile`` (what webdataset's ``tar_file_iterator`` uses) reads
    member data in small blocks and dominates the cost of loading a pre-computed log-mel; this reads each
    member with one ``read``. Raises ``ValueError`` on a damaged header or a truncated member.
    """
    pending_name = None
    while True:
        header = stream.read(512)
        if len(header) == 0:
            return
        if len(header) < 512:
            raise ValueError("truncated tar header")
        if header == ZERO_BLOCK:  # end-of-archive marker, unless data follows (a zeroed member header)
            if stream.read().strip(b"\0"):
                raise ValueError("an all-zero tar block is followed by more data: a damaged member header, "
                                 "not the end of the archive")
            return
        kind, data = _tar_member(stream, header)
        if kind == b"x":  # pax extended header: take its path record
            for rec in data.decode("utf-8", "replace").split("\n"):
                if " path=" in rec:
                    pending_name = rec.split(" path=", 1)[1]
        elif kind == b"L":  # GNU long name
            pending_name = data.rstrip(b"\0").decode("utf-8", "replace")
        elif kind not in (b"0", b"\0"):
            pending_name = None
        else:
            name = pending_name if pending_name is not None else _header_name(header)
            pending_name = None
            yield name, data
