//! Archive inspection on arbitrary bytes, in every format the importer reads (plain tar, gzip,
//! zstd): it may refuse them, never panic, hang or blow up memory.
#![no_main]

use std::io::{Cursor, Read};

use libfuzzer_sys::fuzz_target;
use offline_images::archive::{decompress, inspect_stream, Compression, Limits};

fuzz_target!(|data: &[u8]| {
    // Small caps, so that a large-metadata input is refused quickly instead of slowly.
    let limits = Limits { metadata_max: 1 << 20, blob_json_max: 1 << 20, total_json_max: 4 << 20, ..Limits::default() };
    let _ = inspect_stream(data, Compression::None, limits);
    // The same bytes as a file would be read: decompressed by what their magic says.
    if let Ok((compression, tar)) = decompress(Cursor::new(data.to_vec())) {
        if compression != Compression::None {
            // At most 64 MiB out, so a compression bomb costs the fuzzer time, not memory.
            let _ = inspect_stream(tar.take(64 << 20), compression, limits);
        }
    }
});
