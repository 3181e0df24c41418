"""Lineage thumbnails: the source image a record names, shrunk; a missing one is simply absent."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image

from dalle_data.review.images import ImageStore
from dalle_data.review.run import load_run
from tests.review.test_decisions import make_run


def test_thumbnails_of_file_and_parquet_sources(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    big = tmp_path / "photos" / "cat" / "a.jpg"
    big.parent.mkdir(parents=True)
    Image.new("RGB", (1200, 600), (10, 200, 30)).save(big)
    small = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 0, 0)).save(small, format="PNG")
    table = tmp_path / "other-run.parquet"
    pq.write_table(pa.table({"id": ["src1"], "image": [{"bytes": small.getvalue(), "path": "src1.png"}]}), table)
    run = load_run(make_run(tmp_path / "out"))
    store = ImageStore(run)
    record = run.records[0].replace(source_path=str(big), source2_path=f"{table}#src1", mode="fuse")

    with Image.open(io.BytesIO(store.thumbnail(record, 1))) as thumb:
        assert thumb.format == "PNG" and thumb.size == (256, 128)
    with Image.open(io.BytesIO(store.thumbnail(record, 2))) as thumb:
        assert thumb.size == (32, 32) and thumb.getpixel((0, 0)) == (200, 0, 0)
    gone = record.replace(id="other", source_path=str(tmp_path / "missing.png"), source2_path=None)
    assert store.thumbnail(gone, 1) is None and store.thumbnail(gone, 2) is None
    not_an_image = record.replace(id="other2", source_path=str(tmp_path / "out" / "spec.yaml"))
    assert store.thumbnail(not_an_image, 1) is None
