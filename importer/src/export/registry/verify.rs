//! Digest verification while bytes stream: a reader that fails at EOF when what it read does
//! not have the digest (and size) it should have.

use std::io::{self, Read};

use sha2::{Digest, Sha256};

use super::error::RegistryError;

/// What is expected of a blob, and what has been seen of it so far.
pub struct Verifier {
    expected: String,
    size: Option<u64>,
    hasher: Sha256,
    count: u64,
}

impl Verifier {
    /// `expected` is `sha256:<hex>`; other algorithms are refused by [`check_algorithm`].
    pub fn new(expected: &str, size: Option<u64>) -> Verifier {
        Verifier {
            expected: expected.to_string(),
            size,
            hasher: Sha256::new(),
            count: 0,
        }
    }

    pub fn update(&mut self, data: &[u8]) -> io::Result<()> {
        self.count += data.len() as u64;
        if let Some(size) = self.size.filter(|s| self.count > *s) {
            return Err(RegistryError::TooLong {
                digest: self.expected.clone(),
                size,
            }
            .into_io());
        }
        self.hasher.update(data);
        Ok(())
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn expected_size(&self) -> Option<u64> {
        self.size
    }

    /// Forget what was seen (a download that starts again from byte 0).
    pub fn reset(&mut self) {
        self.hasher = Sha256::new();
        self.count = 0;
    }

    /// At EOF: the size and the digest must be the expected ones.
    pub fn finish(&self) -> io::Result<()> {
        if let Some(size) = self.size.filter(|s| *s != self.count) {
            return Err(RegistryError::TooShort {
                digest: self.expected.clone(),
                size,
                got: self.count,
            }
            .into_io());
        }
        let got = format!(
            "sha256:{}",
            crate::bundle::hex(&self.hasher.clone().finalize())
        );
        if got != self.expected {
            return Err(RegistryError::Digest {
                what: "content",
                expected: self.expected.clone(),
                got,
            }
            .into_io());
        }
        Ok(())
    }
}

/// Whether a digest is one this tool can verify (`sha256:` and 64 hex digits).
pub fn check_algorithm(digest: &str) -> anyhow::Result<()> {
    match digest.split_once(':') {
        Some(("sha256", hex))
            if hex.len() == 64
                && hex
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) =>
        {
            Ok(())
        }
        _ => anyhow::bail!("the digest {digest:?} is not sha256:<64 lowercase hex digits>"),
    }
}

/// Reads `inner` through a [`Verifier`]; the read that meets EOF fails on a mismatch.
pub struct VerifyingReader<R> {
    inner: R,
    pub verifier: Verifier,
}

impl<R: Read> VerifyingReader<R> {
    pub fn new(inner: R, verifier: Verifier) -> Self {
        VerifyingReader { inner, verifier }
    }
}

impl<R: Read> Read for VerifyingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() {
            self.verifier.finish()?;
            return Ok(0);
        }
        self.verifier.update(&buf[..n])?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ABC: &str = "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

    #[test]
    fn the_right_bytes_pass_and_wrong_or_short_ones_fail_at_eof_naming_the_digest() {
        let mut ok = VerifyingReader::new(&b"abc"[..], Verifier::new(ABC, Some(3)));
        io::copy(&mut ok, &mut io::sink()).unwrap();

        let mut bad = VerifyingReader::new(&b"abd"[..], Verifier::new(ABC, Some(3)));
        let e = io::copy(&mut bad, &mut io::sink()).unwrap_err();
        assert!(e.to_string().contains(ABC), "{e}");

        let mut short = VerifyingReader::new(&b"ab"[..], Verifier::new(ABC, Some(3)));
        let e = io::copy(&mut short, &mut io::sink()).unwrap_err();
        assert!(
            e.to_string().contains("ended after 2 of its 3 bytes"),
            "{e}"
        );

        let mut long = VerifyingReader::new(&b"abcd"[..], Verifier::new(ABC, Some(3)));
        assert!(io::copy(&mut long, &mut io::sink()).is_err());
        assert!(check_algorithm(ABC).is_ok());
        assert!(check_algorithm("sha512:00").is_err());
    }
}
