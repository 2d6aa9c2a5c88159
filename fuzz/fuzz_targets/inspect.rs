//! Archive inspection on arbitrary bytes: it may refuse them, never panic, hang or blow up memory.
#![no_main]

use libfuzzer_sys::fuzz_target;
use offline_images::archive::{inspect_stream, sniff, Compression, Limits};

fuzz_target!(|data: &[u8]| {
    // Small caps, so that a large-metadata input is refused quickly instead of slowly.
    let limits = Limits { metadata_max: 1 << 20, blob_json_max: 1 << 20, total_json_max: 4 << 20 };
    let _ = inspect_stream(data, Compression::None, limits);
    if let Ok(Compression::Gzip) = sniff(data) {
        let gz = flate2_reader(data);
        let _ = inspect_stream(gz, Compression::Gzip, limits);
    }
});

/// Decompress at most 64 MiB, so a gzip bomb costs the fuzzer time, not memory.
fn flate2_reader(data: &[u8]) -> impl std::io::Read + '_ {
    use std::io::Read;
    offline_images::archive::gzip_reader(data).take(64 << 20)
}
