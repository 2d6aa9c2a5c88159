//! Quantities as a person reads them in a log line. One unit system throughout: binary
//! multiples (KiB, MiB, GiB), for sizes and for rates alike, so a rate can be read against
//! the sizes beside it.

/// Bytes as a person reads them: `1.5 GiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: &[&str] = &["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// A rate in the units of [`human_bytes`]: `3.3 MiB/s`; `-` when no time passed.
pub fn human_rate(bytes: u64, seconds: f64) -> String {
    if seconds <= 0.0 {
        return "-".to_string();
    }
    format!("{}/s", human_bytes((bytes as f64 / seconds) as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn import_rates_are_mib_per_second_like_the_sizes_beside_them() {
        // 3.5 MiB in one second: 3.5 MiB/s, never the 3.7 "MB/s" of decimal megabytes.
        assert_eq!(human_rate(3_670_016, 1.0), "3.5 MiB/s");
        assert_eq!(human_rate(1024, 2.0), "512 B/s");
        assert_eq!(human_rate(10, 0.0), "-");
        assert_eq!(human_bytes(1_048_576), "1.0 MiB");
    }
}
